//! Request-path normalisation: the one place every protocol's path goes through.

/// Why a request path was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// `..`, a drive letter, a backslash or another way out of the served roots.
    Traversal,
    /// NUL or another control character, or an empty path.
    Invalid,
    /// Longer than a phone could sensibly ask for.
    TooLong,
    /// A hidden, editor-temporary or partial file, never served.
    Hidden,
}

impl PathRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            PathRefusal::Traversal => "traversal",
            PathRefusal::Invalid => "invalid_path",
            PathRefusal::TooLong => "path_too_long",
            PathRefusal::Hidden => "hidden",
        }
    }
}

pub const MAX_PATH: usize = 1024;
pub const MAX_SEGMENT: usize = 255;

/// Turn a request path (`/CP-8831-3PCC.cfg`, `profiles//a.xml`, `./x`) into the catalog key
/// `a/b.cfg`: no leading slash, no empty or `.` segments. Anything that could name a file
/// outside the roots is refused rather than "fixed".
pub fn normalize(raw: &str) -> Result<String, PathRefusal> {
    if raw.len() > MAX_PATH {
        return Err(PathRefusal::TooLong);
    }
    if raw.chars().any(|c| c.is_control()) {
        return Err(PathRefusal::Invalid);
    }
    if raw.contains('\\') {
        return Err(PathRefusal::Traversal);
    }
    // `//host/x` or `C:/x`: absolute in some other sense than "from the root".
    if raw.starts_with("//") {
        return Err(PathRefusal::Traversal);
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in raw.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return Err(PathRefusal::Traversal),
            // The first kept segment, wherever `/` and `.` put it (`././C:/x` too).
            s if out.is_empty() && s.len() == 2 && s.ends_with(':') => {
                return Err(PathRefusal::Traversal);
            }
            s if s.len() > MAX_SEGMENT => return Err(PathRefusal::TooLong),
            s if !is_servable_name(s) => return Err(PathRefusal::Hidden),
            s => out.push(s),
        }
    }
    if out.is_empty() {
        return Err(PathRefusal::Invalid);
    }
    Ok(out.join("/"))
}

/// Hidden (`.x`), editor backups (`x~`) and files still being written (`.part`, `.tmp`,
/// `.swp`) are never published nor served.
pub fn is_servable_name(name: &str) -> bool {
    !(name.is_empty()
        || name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with(".swp")
        || name.ends_with(".crdownload"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths() {
        assert_eq!(normalize("/CP-8831-3PCC.cfg").unwrap(), "CP-8831-3PCC.cfg");
        assert_eq!(normalize("CP-8831-3PCC.cfg").unwrap(), "CP-8831-3PCC.cfg");
        assert_eq!(normalize("/a//b/./c.xml").unwrap(), "a/b/c.xml");
    }

    #[test]
    fn refusals() {
        assert_eq!(normalize("/../etc/passwd"), Err(PathRefusal::Traversal));
        assert_eq!(normalize("a/../../x"), Err(PathRefusal::Traversal));
        assert_eq!(
            normalize("..\\windows\\win.ini"),
            Err(PathRefusal::Traversal)
        );
        assert_eq!(normalize("C:/boot.ini"), Err(PathRefusal::Traversal));
        assert_eq!(normalize("//server/share"), Err(PathRefusal::Traversal));
        assert_eq!(normalize("a\0b"), Err(PathRefusal::Invalid));
        assert_eq!(normalize("/"), Err(PathRefusal::Invalid));
        assert_eq!(normalize(""), Err(PathRefusal::Invalid));
        assert_eq!(normalize(&"a".repeat(300)), Err(PathRefusal::TooLong));
        assert_eq!(normalize(&"a/".repeat(600)), Err(PathRefusal::TooLong));
        assert_eq!(normalize("/.ssh/id_rsa"), Err(PathRefusal::Hidden));
        assert_eq!(normalize("fw.bin.part"), Err(PathRefusal::Hidden));
        assert_eq!(normalize("fw.bin.tmp"), Err(PathRefusal::Hidden));
        assert_eq!(normalize("profile.xml~"), Err(PathRefusal::Hidden));
    }

    /// Found by the `path_normalize` fuzz target: the drive-letter check looked at the
    /// first two `/`-separated pieces, so `././C:/x` passed it, and a key such as
    /// `'4/R:` (from `/'4/R:`) was refused when normalised again.
    #[test]
    fn a_drive_letter_is_judged_on_the_first_kept_segment() {
        for raw in ["././C:/x", "/./C:/x", ".//./c:"] {
            assert_eq!(normalize(raw), Err(PathRefusal::Traversal), "{raw}");
        }
        for raw in ["/'4/R:", "73-7]////]:////2/-//x", "/272///-:", "p3//,:"] {
            let key = normalize(raw).unwrap();
            assert_eq!(normalize(&key), Ok(key.clone()), "{raw}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// What `normalize` accepts is a key: no way out of the root, no empty or dot
        /// segments, and normalising it again changes nothing.
        #[test]
        fn accepted_paths_are_stable_keys(raw in "[a-zA-Z0-9./:\\\\~_-]{0,40}") {
            if let Ok(k) = normalize(&raw) {
                prop_assert!(!k.starts_with('/') && !k.contains('\\'), "{}", k);
                for seg in k.split('/') {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..", "{}", k);
                }
                let first = k.split('/').next().unwrap();
                prop_assert!(!(first.len() == 2 && first.ends_with(':')), "drive in {}", k);
                prop_assert_eq!(normalize(&k), Ok(k.clone()));
            }
        }

        /// A path made of plain names normalises to those names joined by `/`, whatever
        /// leading slashes and `.` segments surround them.
        #[test]
        fn plain_names_survive(names in proptest::collection::vec("[a-zA-Z0-9][a-zA-Z0-9_-]{0,12}", 1..5), lead in "/?", dots in 0usize..3) {
            let mut raw = lead.clone();
            for n in &names {
                for _ in 0..dots {
                    raw.push_str("./");
                }
                raw.push_str(n);
                raw.push('/');
            }
            raw.pop();
            prop_assert_eq!(normalize(&raw), Ok(names.join("/")));
        }
    }
}
