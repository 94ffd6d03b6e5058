//! Per-device templates: `*.tmpl` files in the catalog, rendered with phone-style macros.
//!
//! Syntax (Cisco's profile macro language, which operators of these phones already know):
//! `$NAME` (longest run of letters, digits and `_`), `$(NAME)`, `$(NAME:p)` from character
//! `p` on, `$(NAME:p:q)` `q` characters from `p`, and `$$` for a dollar sign. A `$` before
//! anything else stays as written.
//!
//! Rendering is all or nothing: one unknown variable and the whole file is refused.
//!
//! Which template answers a request: for the request key `a/x.cfg`, the first of
//! 1. `a/x.cfg` itself (a static file always wins),
//! 2. `a/x.cfg.tmpl`,
//! 3. if the path names a MAC, that MAC replaced by the literal `$MA`:
//!    `cfg/00562b043615.xml` → `cfg/$MA.xml.tmpl` (one template for every device).
//!
//! `*.tmpl` files themselves are never served.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

pub const SUFFIX: &str = ".tmpl";

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    Missing { name: String, line: usize },
    Syntax { line: usize, message: String },
}

impl RenderError {
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Missing { .. } => "missing_variable",
            RenderError::Syntax { .. } => "template_syntax",
        }
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::Missing { name, line } => {
                write!(f, "line {line}: the device has no variable `{name}`")
            }
            RenderError::Syntax { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Render `text`, asking `var` for each variable.
pub fn render<'v>(
    text: &str,
    var: &dyn Fn(&str) -> Option<Cow<'v, str>>,
) -> Result<String, RenderError> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut line = 1;
    let mut i = 0;
    let mut lit = 0; // start of pending literal text
    let get = |name: &str, line: usize| {
        var(name).ok_or_else(|| RenderError::Missing {
            name: name.to_string(),
            line,
        })
    };
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'$' => {
                out.push_str(&text[lit..i]);
                match b.get(i + 1) {
                    Some(b'$') => {
                        out.push('$');
                        i += 2;
                    }
                    Some(b'(') => {
                        let close = text[i + 2..].find(')').map(|j| i + 2 + j);
                        let Some(close) = close.filter(|&c| !text[i + 2..c].contains('\n')) else {
                            return Err(RenderError::Syntax {
                                line,
                                message: "`$(` without `)` on the same line".into(),
                            });
                        };
                        let inner = &text[i + 2..close];
                        let mut parts = inner.split(':');
                        let name = parts.next().unwrap_or("");
                        if name.is_empty() || !name.bytes().all(is_ident) {
                            return Err(RenderError::Syntax {
                                line,
                                message: format!(
                                    "`$({inner})`: expected $(NAME), $(NAME:p) or $(NAME:p:q)"
                                ),
                            });
                        }
                        let nums: Result<Vec<usize>, _> = parts.map(str::parse::<usize>).collect();
                        let nums = match nums {
                            Ok(n) if n.len() <= 2 => n,
                            _ => {
                                return Err(RenderError::Syntax {
                                    line,
                                    message: format!(
                                        "`$({inner})`: offsets must be whole numbers, as in $(NAME:p:q)"
                                    ),
                                });
                            }
                        };
                        let value = get(name, line)?;
                        let p = nums.first().copied().unwrap_or(0);
                        let q = nums.get(1).copied().unwrap_or(usize::MAX);
                        out.extend(value.chars().skip(p).take(q));
                        i = close + 1;
                    }
                    Some(&c) if c.is_ascii_alphabetic() || c == b'_' => {
                        let start = i + 1;
                        let mut end = start;
                        while end < b.len() && is_ident(b[end]) {
                            end += 1;
                        }
                        out.push_str(&get(&text[start..end], line)?);
                        i = end;
                    }
                    _ => {
                        out.push('$');
                        i += 1;
                    }
                }
                lit = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[lit..]);
    Ok(out)
}

/// Template keys that may answer request `key`, in order (see the module comment).
/// `mac_at` is where the path names a MAC, if it does.
pub fn candidates(key: &str, mac_at: Option<Range<usize>>) -> Vec<String> {
    let mut v = vec![format!("{key}{SUFFIX}")];
    if let Some(r) = mac_at {
        v.push(format!("{}$MA{}{SUFFIX}", &key[..r.start], &key[r.end..]));
    }
    v
}

pub fn is_template(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with(SUFFIX)
}

/// `$PSN`, the product series: the model from its first digit to the next `-`
/// (`SPA508G` → `508G`, `CP-8831-3PCC` → `8831`, `SIP-T46G` → `46G`).
pub fn series(model: &str) -> Option<String> {
    let start = model.find(|c: char| c.is_ascii_digit())?;
    let rest = &model[start..];
    Some(rest.split('-').next().unwrap_or(rest).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<Cow<'static, str>> {
        match name {
            "MA" => Some("00562b043615".into()),
            "MAC" => Some("00:56:2b:04:36:15".into()),
            "PN" => Some("CP-8831-3PCC".into()),
            "extension" => Some("1001".into()),
            _ => None,
        }
    }

    #[test]
    fn macros_and_substrings() {
        let t = "<mac>$MA</mac> $MAC $(PN)-x $(MA:6) $(MA:0:6) $(MA:10:99) $$5 $ 1 price$";
        assert_eq!(
            render(t, &vars).unwrap(),
            "<mac>00562b043615</mac> 00:56:2b:04:36:15 CP-8831-3PCC-x 043615 00562b 15 $5 $ 1 price$"
        );
        assert_eq!(render("ext=$extension;", &vars).unwrap(), "ext=1001;");
        assert_eq!(render("no macros\n", &vars).unwrap(), "no macros\n");
    }

    #[test]
    fn missing_variable_refuses_the_whole_file() {
        let e = render("a $MA\nb\nc $sip_password\n", &vars).unwrap_err();
        assert_eq!(
            e,
            RenderError::Missing {
                name: "sip_password".into(),
                line: 3
            }
        );
        // Greedy names: `$MAX` is not `$MA` followed by X.
        assert!(matches!(
            render("$MAX", &vars),
            Err(RenderError::Missing { .. })
        ));
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(
            render("x $(MA", &vars),
            Err(RenderError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            render("\n$(MA:a:b)", &vars),
            Err(RenderError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            render("$(MA:1:2:3)", &vars),
            Err(RenderError::Syntax { .. })
        ));
    }

    #[test]
    fn template_candidates() {
        assert_eq!(candidates("x.cfg", None), vec!["x.cfg.tmpl"]);
        assert_eq!(
            candidates("cfg/00562b043615.xml", Some(4..16)),
            vec!["cfg/00562b043615.xml.tmpl", "cfg/$MA.xml.tmpl"]
        );
        assert!(is_template("a/B.CFG.TMPL"));
        assert_eq!(series("SPA508G").as_deref(), Some("508G"));
        assert_eq!(series("CP-8831-3PCC").as_deref(), Some("8831"));
        assert_eq!(series("SIP-T46G").as_deref(), Some("46G"));
        assert_eq!(series("VVX_400").as_deref(), Some("400"));
    }
}
