//! DHCP leases: list, one, release (through the running DHCP server's desk).

use std::net::Ipv4Addr;

use http::{Response, StatusCode};
use serde::Serialize;

use super::{Api, NotFound, Problem, answer, audit, json};
use crate::devices::desk::{LeaseDesk, LeaseRow, ReleaseError};
use crate::http::LoggedBody;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaseList {
    pub items: Vec<LeaseRow>,
    pub total: usize,
}

fn desk(api: &Api) -> Result<&dyn LeaseDesk, Problem> {
    Problem::unless_off(
        api.provisioner.registry().desk().map(|d| d.as_ref()),
        "DHCP is off",
        "this provbox serves no DHCP (dhcp.enabled is false), so it holds no leases",
    )
}

fn parse_ip(ip: &str) -> Result<Ipv4Addr, Problem> {
    ip.parse().map_err(|_| {
        Problem::bad_request(format!(
            "`{ip}` is not an IPv4 address; expected e.g. 198.18.0.100"
        ))
    })
}

/// Every lease the DHCP server holds.
#[utoipa::path(get, operation_id = "leases_list", path = "/api/v1/leases", tag = "leases",
    responses(
        (status = 200, body = LeaseList),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub fn list(api: &Api) -> Response<LoggedBody> {
    answer(desk(api).map(|d| {
        let items = d.list();
        LeaseList {
            total: items.len(),
            items,
        }
    }))
}

/// The lease at one address.
#[utoipa::path(get, operation_id = "leases_get", path = "/api/v1/leases/{ip}", tag = "leases",
    params(("ip" = String, Path, description = "the leased IPv4 address")),
    responses(
        (status = 200, body = LeaseRow),
        NotFound,
    ))]
pub fn get(api: &Api, ip: &str) -> Response<LoggedBody> {
    let found = parse_ip(ip).and_then(|ip| {
        desk(api)?
            .list()
            .into_iter()
            .find(|l| l.ip == ip)
            .ok_or_else(|| Problem::not_found(format!("no lease at {ip}")))
    });
    answer(found)
}

/// Release a lease: it ends now, durably (journaled like any lease change). The address
/// is held back until the old holder's lease would have run out, so the phone is NAKed
/// at its next renewal and gets another address; then it returns to the pool.
#[utoipa::path(delete, operation_id = "leases_release", path = "/api/v1/leases/{ip}", tag = "leases",
    params(("ip" = String, Path, description = "the leased IPv4 address")),
    responses(
        (status = 200, body = LeaseRow, description = "released; the row shows the hold"),
        NotFound,
        (status = 500, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn release(api: &Api, who: &str, ip: &str) -> Response<LoggedBody> {
    let ip = match parse_ip(ip) {
        Ok(ip) => ip,
        Err(p) => return p.into(),
    };
    let fut = match desk(api) {
        Ok(d) => d.release(ip),
        Err(p) => return p.into(),
    };
    match fut.await {
        Ok(row) => {
            audit(who, "release lease", &format!("{ip} ({})", row.mac), "done");
            json(StatusCode::OK, &row)
        }
        Err(ReleaseError::NotBound) => {
            audit(who, "release lease", &ip.to_string(), "no bound lease");
            Problem::not_found(format!("no bound lease at {ip}")).into()
        }
        Err(ReleaseError::Store(e)) => {
            audit(
                who,
                "release lease",
                &ip.to_string(),
                "journal write failed",
            );
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Not released", e).into()
        }
    }
}
