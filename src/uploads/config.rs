//! The `uploads:` section of the configuration.

use serde::Deserialize;

use super::Pattern;
use crate::confkit::Size;
use crate::confkit::{At, Problems};

/// Every key is optional: a missing one takes its value from [`Config::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Phones may write back (HTTP PUT and POST) under `patterns`.
    pub enabled: bool,
    /// TFTP write requests under `patterns` too (phones that provision over TFTP).
    pub tftp: bool,
    /// File names a phone may write, `$MA` standing for its MAC; none: every vendor's.
    pub patterns: Option<Vec<At<String>>>,
    /// Largest single upload.
    pub max_file: At<Size>,
    /// Everything one device keeps (log rotations included).
    pub max_device: At<Size>,
    /// Everything the store keeps.
    pub max_total: At<Size>,
    /// A `*.log` upload is appended to the file until it would pass this size; then the
    /// file is rotated (`name.1`, `name.2`, ...) and the upload starts a new one.
    pub log_rotate: At<Size>,
    /// Rotated logs kept per file name.
    pub log_keep: At<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            tftp: false,
            patterns: None,
            max_file: At::new(Size(1 << 20)),
            max_device: At::new(Size(16 << 20)),
            max_total: At::new(Size(1 << 30)),
            log_rotate: At::new(Size(256 << 10)),
            log_keep: At::new(3),
        }
    }
}

impl Config {
    /// The file name patterns in force: the configured list, else every vendor's.
    pub fn patterns(&self) -> Vec<Pattern> {
        match &self.patterns {
            Some(list) => list.iter().filter_map(|p| Pattern::parse(p).ok()).collect(),
            None => crate::vendors::VENDORS
                .iter()
                .flat_map(|v| v.uploads.iter())
                .filter_map(|p| Pattern::parse(p).ok())
                .collect(),
        }
    }

    pub fn validate(&self, p: &mut Problems) {
        for (i, pat) in self.patterns.iter().flatten().enumerate() {
            if let Err(why) = Pattern::parse(pat) {
                p.add(format!("uploads.patterns[{i}]"), pat, why);
            }
        }
        for (key, v, min) in [
            ("uploads.max_file", &self.max_file, 1),
            ("uploads.max_device", &self.max_device, 1),
            ("uploads.max_total", &self.max_total, 1),
            ("uploads.log_rotate", &self.log_rotate, 1024),
        ] {
            if v.0 < min {
                p.add(
                    key,
                    v,
                    format!("is {} bytes; expected {min} or more (e.g. 1MiB)", v.0),
                );
            }
        }
        if self.max_device.0 < self.max_file.0 {
            p.add(
                "uploads.max_device",
                &self.max_device,
                format!(
                    "is {} bytes, less than uploads.max_file ({}); expected at least that",
                    self.max_device.0, self.max_file.0
                ),
            );
        }
        if self.max_total.0 < self.max_device.0 {
            p.add(
                "uploads.max_total",
                &self.max_total,
                format!(
                    "is {} bytes, less than uploads.max_device ({}); expected at least that",
                    self.max_total.0, self.max_device.0
                ),
            );
        }
        p.check_range("uploads.log_keep", &self.log_keep, 0..=100, "");
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config as Root;

    fn parse(section: &str) -> Result<Root, crate::config::ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let yaml = format!("catalog:\n  roots: [files]\nuploads:\n{section}");
        Root::parse(&yaml, &dir.path().join("config.yaml"))
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("  enabled: true\n  max_file: 64KiB\n")
            .unwrap()
            .uploads;
        assert!(c.enabled && !c.tftp);
        assert_eq!(c.max_file.0, 64 << 10);
        assert_eq!(c.max_device.0, 16 << 20);
        assert_eq!(c.log_keep.value, 3);
        let names: Vec<String> = c.patterns().iter().map(|p| p.to_string()).collect();
        assert!(names.contains(&"$MA-phone.cfg".to_string()), "{names:?}");
        assert!(names.contains(&"$MA-local.cfg".to_string()), "{names:?}");
        let c = parse("  patterns: [\"logs-$MA.txt\"]\n").unwrap().uploads;
        let names: Vec<String> = c.patterns().iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["logs-$MA.txt"]);
    }

    #[test]
    fn bad_values_name_field_and_line() {
        let err = parse(
            "  enabled: true\n  patterns: [\"$MA-ok.log\", \"../$MA.cfg\", \"nomac.cfg\"]\n  max_file: 2MiB\n  max_device: 1MiB\n  log_rotate: 10\n  log_keep: 1000\n",
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(
            fields,
            vec![
                ("uploads.patterns[1]", 5),
                ("uploads.patterns[2]", 5),
                ("uploads.log_rotate", 8),
                ("uploads.max_device", 7),
                ("uploads.log_keep", 9),
            ]
        );
        let text = err.to_string();
        assert!(text.contains("one `$MA`"), "{text}");
    }
}
