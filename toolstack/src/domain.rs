//! Domains: resolving DOM arguments and knowing which guests are alive.

use crate::error::ToolError;
use crate::paths::domain_path;
use crate::store::Store;
use crate::sysfs::Sysfs;
use crate::Toolstack;

/// Upper bound on domains scanned for a name.
const MAX_DOMAINS: usize = 65536;

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// Whether `/local/domain/<domid>` exists (the toolstack creates it with the
    /// domain and removes it on destruction, so it is the liveness test libxl uses).
    pub fn domain_exists(&self, domid: u16) -> Result<bool, ToolError> {
        Ok(self.store.read(S::NO_TX, &domain_path(domid))?.is_some())
    }

    /// Domids listed under `/local/domain`.
    pub fn domains(&self) -> Result<Vec<u16>, ToolError> {
        let mut v: Vec<u16> = self
            .store
            .directory(S::NO_TX, "/local/domain")?
            .iter()
            .take(MAX_DOMAINS)
            .filter_map(|k| k.parse().ok())
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Resolve a DOM argument: a domid of a live domain, or a unique domain name.
    pub fn resolve_domain(&self, dom: &str) -> Result<u16, ToolError> {
        if let Ok(domid) = dom.parse::<u16>() {
            return if self.domain_exists(domid)? {
                Ok(domid)
            } else {
                Err(ToolError::NoSuchDomain(dom.to_owned()))
            };
        }
        let mut found = None;
        for domid in self.domains()? {
            let name = self
                .store
                .read(S::NO_TX, &format!("{}/name", domain_path(domid)))?;
            if name.as_deref() == Some(dom) {
                if found.is_some() {
                    return Err(ToolError::AmbiguousDomain(dom.to_owned()));
                }
                found = Some(domid);
            }
        }
        found.ok_or_else(|| ToolError::NoSuchDomain(dom.to_owned()))
    }
}
