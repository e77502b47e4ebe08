//! Guest domains as xenstore knows them.
//!
//! Why: the backend serves a controller only while its guest's home
//! (`/local/domain/<domid>`) exists, the toolstack addresses guests by name,
//! and `@releaseDomain` fires only for introduced domains. A guest here is
//! all three, as the toolstack leaves a freshly created domain.

use pvusb_xenstore::{XsClient, XsError};

/// Writes the home of `domid` (`name`, `domid`) and introduces it. The
/// simulated guest has no xenstore ring: any page and port do, the embedded
/// server only records that the domain exists.
pub fn create(xs: &XsClient, domid: u16, name: &str) -> Result<(), XsError> {
    let home = format!("/local/domain/{domid}");
    xs.transaction(|tx| {
        xs.write(tx, &format!("{home}/name"), name)?;
        xs.write(tx, &format!("{home}/domid"), &domid.to_string())
    })?;
    if domid != 0 {
        xs.introduce_domain(domid, 0, 0)?;
    }
    Ok(())
}
