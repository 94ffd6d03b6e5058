//! The CSV export (`/api/devices.csv`). Every cell is quoted, and one that a spreadsheet
//! would read as a formula (a leading `= + - @`, or a tab or CR before one) gets a `'`
//! in front: device names, User-Agents and syslog details come from the network.

use crate::status::{Device, StatusBook};

use super::iso;

/// Characters that start a formula (or hide one behind leading whitespace).
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

pub fn field(s: &str) -> String {
    let s = s.replace('"', "\"\"");
    if s.starts_with(FORMULA_START) {
        format!("\"'{s}\"")
    } else {
        format!("\"{s}\"")
    }
}

pub const HEADER: &str =
    "mac,ip,model,vendor_class,state,reason,first_seen,last_seen,transfers,bytes,last_event\n";

/// One device as a CSV line (with its newline).
pub fn row(d: &Device) -> String {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let last = d
        .last_event()
        .map(|e| format!("{} {}", e.kind, e.detail))
        .unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}\n",
        field(&d.key),
        field(&d.ip.map(|i| i.to_string()).unwrap_or_default()),
        field(&o(&d.model)),
        field(&o(&d.vendor_class)),
        field(d.state.as_str()),
        field(&o(&d.reason)),
        field(&iso(d.first_seen)),
        field(&iso(d.last_seen)),
        d.transfers,
        d.bytes,
        field(&last),
    )
}

/// The whole book as CSV, row by row under its lock (no copy of the timelines).
pub fn csv(book: &StatusBook) -> String {
    HEADER.to_string() + &book.map(row).concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 4180 reader for the tests: the cells of one CSV text.
    fn parse(text: &str) -> Vec<Vec<String>> {
        let mut rows = vec![vec![]];
        let mut cell = String::new();
        let (mut quoted, mut chars) = (false, text.chars().peekable());
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => cell.push(c),
                (false, '"') => quoted = true,
                (false, ',') => rows.last_mut().unwrap().push(std::mem::take(&mut cell)),
                (false, '\n') => {
                    rows.last_mut().unwrap().push(std::mem::take(&mut cell));
                    rows.push(vec![]);
                }
                (false, c) => cell.push(c),
            }
        }
        if rows.last().is_some_and(|r| r.is_empty()) && cell.is_empty() {
            rows.pop();
        }
        rows
    }

    #[test]
    fn quotes_and_defuses_formulas() {
        assert_eq!(field("a\"b"), "\"a\"\"b\"");
        assert_eq!(field("=cmd()"), "\"'=cmd()\"");
        assert_eq!(field("\t=1+1"), "\"'\t=1+1\"");
        assert_eq!(field("\r@SUM(A1)"), "\"'\r@SUM(A1)\"");
        assert_eq!(field("SPA504G"), "\"SPA504G\"");
        let mut d = Device::new("00:0e:08:aa:bb:cc".into(), 0);
        d.push_event(0, "resync_failed", "bad, \"xml\"");
        let text = format!("{HEADER}{}", row(&d));
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains("\"resync_failed bad, \"\"xml\"\"\"")
        );
    }

    proptest! {
        /// Whatever a phone put in a field, its cell reads back as that text (with a `'`
        /// in front when it could start a formula), never as a formula, and never splits
        /// the row.
        #[test]
        fn every_cell_is_inert(cells in proptest::collection::vec(".*", 1..6)) {
            let line = cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",") + "\n";
            let rows = parse(&line);
            prop_assert_eq!(rows.len(), 1);
            prop_assert_eq!(rows[0].len(), cells.len());
            for (got, want) in rows[0].iter().zip(&cells) {
                prop_assert!(!got.starts_with(FORMULA_START), "{got:?}");
                if want.starts_with(FORMULA_START) {
                    prop_assert_eq!(got, &format!("'{want}"));
                } else {
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
