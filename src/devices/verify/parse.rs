//! Parameter lists from the three formats phones are provisioned in. Small hand parsers:
//! the profiles are flat, and a report is untrusted input (never panics, errors say where).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Cisco 3PCC/SPA `<flat-profile><Name ua="na">value</Name>…`.
    CiscoFlat,
    /// Polycom: every attribute of every element is a parameter.
    PolycomXml,
    /// Yealink (and others): `name = value` lines, `#` comments.
    KeyValue,
}

/// Tell the format from the content (for vendors without one of their own).
pub(crate) fn sniff(text: &str) -> Format {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if !t.starts_with('<') {
        Format::KeyValue
    } else if t.contains("<flat-profile") {
        Format::CiscoFlat
    } else {
        Format::PolycomXml
    }
}

pub(crate) fn parse(f: Format, text: &str) -> Result<BTreeMap<String, String>, String> {
    match f {
        Format::CiscoFlat => cisco(text),
        Format::PolycomXml => polycom(text),
        Format::KeyValue => Ok(key_value(text)),
    }
}

/// `&amp; &lt; &gt; &quot; &apos; &#NN; &#xNN;`; anything else is left as written.
pub(crate) fn decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Byte search: the window may end inside a character.
        let Some(end) = rest.as_bytes()[..rest.len().min(12)]
            .iter()
            .position(|&c| c == b';')
        else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let ent = &rest[1..end];
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .or_else(|| ent.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The line (1-based) at byte `at`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One markup item.
enum Item<'a> {
    /// An element start: name, the attribute text, whether it closes itself.
    Open(&'a str, &'a str, bool),
    Close(&'a str),
    Text(&'a str),
}

/// Markup items in order; comments, `<?…?>` and `<!…>` are skipped.
fn items(text: &str) -> Result<Vec<(usize, Item<'_>)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = text.as_bytes();
    while i < b.len() {
        if b[i] != b'<' {
            let end = text[i..].find('<').map_or(b.len(), |n| i + n);
            out.push((i, Item::Text(&text[i..end])));
            i = end;
            continue;
        }
        let rest = &text[i..];
        let skip_to = |close: &str| {
            rest.find(close)
                .map(|n| i + n + close.len())
                .ok_or_else(|| format!("line {}: unterminated markup", line_at(text, i)))
        };
        if rest.starts_with("<!--") {
            i = skip_to("-->")?;
            continue;
        }
        if rest.starts_with("<?") {
            i = skip_to("?>")?;
            continue;
        }
        if rest.starts_with("<!") {
            i = skip_to(">")?;
            continue;
        }
        // The tag's end: the first `>` outside quotes.
        let mut j = i + 1;
        let mut quote = None;
        while j < b.len() {
            match (quote, b[j]) {
                (None, b'"' | b'\'') => quote = Some(b[j]),
                (Some(q), c) if c == q => quote = None,
                (None, b'>') => break,
                _ => {}
            }
            j += 1;
        }
        if j >= b.len() {
            return Err(format!("line {}: unterminated tag", line_at(text, i)));
        }
        let inner = &text[i + 1..j];
        if let Some(name) = inner.strip_prefix('/') {
            out.push((i, Item::Close(name.trim())));
        } else {
            let (inner, selfclosing) = match inner.strip_suffix('/') {
                Some(x) => (x, true),
                None => (inner, false),
            };
            let name_end = inner
                .find(|c: char| c.is_whitespace())
                .unwrap_or(inner.len());
            let name = &inner[..name_end];
            if name.is_empty() {
                return Err(format!("line {}: a tag without a name", line_at(text, i)));
            }
            out.push((i, Item::Open(name, &inner[name_end..], selfclosing)));
        }
        i = j + 1;
    }
    Ok(out)
}

/// `name="value"` pairs of an element's attribute text.
fn attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or("an attribute without `=`")?;
        let name = rest[..eq].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("a malformed attribute name `{name}`"));
        }
        let v = rest[eq + 1..].trim_start();
        let q = v.chars().next().filter(|c| *c == '"' || *c == '\'');
        let q = q.ok_or_else(|| format!("attribute `{name}` has no quoted value"))?;
        let end = v[1..]
            .find(q)
            .ok_or_else(|| format!("attribute `{name}` is not closed"))?;
        out.push((name.to_string(), decode(&v[1..1 + end])));
        rest = v[end + 2..].trim_start();
    }
    Ok(out)
}

/// A Cisco flat profile: each element holding only text (`<Name ua="na">v</Name>`,
/// `<Name/>`) is a parameter; the root and any other container are not.
pub(crate) fn cisco(text: &str) -> Result<BTreeMap<String, String>, String> {
    let items = items(text)?;
    let mut out = BTreeMap::new();
    for (k, (_, it)) in items.iter().enumerate() {
        let Item::Open(name, _, closed) = it else {
            continue;
        };
        if *closed {
            out.insert(name.to_string(), String::new());
            continue;
        }
        let (value, next) = match items.get(k + 1) {
            Some((_, Item::Text(t))) => (decode(t), k + 2),
            _ => (String::new(), k + 1),
        };
        if let Some((_, Item::Close(c))) = items.get(next)
            && c == name
        {
            out.insert(name.to_string(), value);
        }
    }
    if out.is_empty() && !text.contains("flat-profile") {
        return Err("no flat-profile parameters".into());
    }
    Ok(out)
}

/// Polycom: every attribute of every element.
pub(crate) fn polycom(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (at, it) in items(text)? {
        if let Item::Open(_, attrs, _) = it {
            for (k, v) in
                attributes(attrs).map_err(|e| format!("line {}: {e}", line_at(text, at)))?
            {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}

/// `name = value` lines; `#` and `;` start comments; lines without `=` are not
/// parameters (Yealink's `#!version:1.0.0.1` header is a comment).
pub(crate) fn key_value(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let k = k.trim();
            if !k.is_empty() {
                out.insert(k.to_string(), v.trim().to_string());
            }
        }
    }
    out
}
