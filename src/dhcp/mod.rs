//! dhcp front end (placeholder until its issue lands).

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::config::{At, ListenerSpec, Problems, Transport};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: At<SocketAddr>,
}

fn default_listen() -> At<SocketAddr> {
    At::new(SocketAddr::from(([0, 0, 0, 0], 67)))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: default_listen(),
        }
    }
}

impl Config {
    pub fn resolve_paths(&mut self, _base: &Path) {}

    pub fn validate(&self, p: &mut Problems) {
        if self.enabled {
            p.add(
                "dhcp.enabled",
                &self.listen,
                "the dhcp front end is not available in this build yet; expected false",
            );
        }
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        vec![ListenerSpec {
            field: "dhcp.listen".into(),
            transport: Transport::Udp,
            addr: self.listen.clone(),
        }]
    }
}
