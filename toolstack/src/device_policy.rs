//! `dev-attach`'s device policy check: the device's facts from sysfs
//! matched against the rules file ([`Sysfs::rules_path`], USBGuard's rule
//! language, see [`pvusb_policy`]). No file: no check. The backend daemon
//! checks again each time it opens the device, so what is enforced here is
//! the early, explained refusal, not the only one.

use pvusb_policy::descriptors::sysfs_interfaces;
use pvusb_policy::{DeviceFacts, Guest, Policy};
use pvusb_support::Chain;

use crate::error::ToolError;
use crate::paths::domain_path;
use crate::store::Store;
use crate::sysfs::{Sysfs, UsbDevice};
use crate::Toolstack;

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// The rules in force: `None` when the rules file does not exist.
    pub fn device_policy(&self) -> Result<Option<Policy>, ToolError> {
        Ok(Policy::load(&self.sysfs.rules_path())?)
    }

    /// What the rules see of `device` going to `domid`.
    pub fn policy_facts(
        &self,
        domid: u16,
        device: &UsbDevice,
        policy: &Policy,
    ) -> Result<DeviceFacts, ToolError> {
        let busid = &device.busid;
        let interfaces = if pvusb_policy::matching::needs_interfaces(&policy.rules) {
            let blob = self.sysfs.descriptors(busid)?;
            sysfs_interfaces(&blob).map_err(|e| ToolError::PolicyRefused {
                busid: busid.clone(),
                domid,
                what: "blocked",
                why: format!(
                    "{}: its descriptors are malformed ({e}) and the rules look at interfaces",
                    policy.path.display(),
                    e = Chain(&e)
                ),
            })?
        } else {
            Vec::new()
        };
        let name = self
            .store
            .read(S::NO_TX, &format!("{}/name", domain_path(domid)))?;
        Ok(DeviceFacts {
            vendor: device.vendor,
            product: device.product,
            name: device.product_name.clone(),
            serial: self.sysfs.serial(busid)?,
            port: busid.clone(),
            interfaces,
            guest: Some(Guest { domid, name }),
        })
    }

    /// Refuses `device` for `domid` when the rules do.
    pub(crate) fn check_policy(&self, domid: u16, device: &UsbDevice) -> Result<(), ToolError> {
        let Some(policy) = self.device_policy()? else {
            return Ok(());
        };
        let facts = self.policy_facts(domid, device, &policy)?;
        match policy.check(&facts) {
            None => Ok(()),
            Some(r) => {
                tracing::info!(busid = %device.busid, domid, "device policy: {} by {}", r.what, r.why);
                Err(ToolError::PolicyRefused {
                    busid: device.busid.clone(),
                    domid,
                    what: r.what,
                    why: r.why,
                })
            }
        }
    }
}
