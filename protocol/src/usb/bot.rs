//! Mass storage bulk-only transport (BOT 1.0) wire constants: what the
//! emulated disk and the frontend's mass-storage client must agree on.

/// `dCBWSignature`, "USBC" little-endian.
pub const CBW_SIGNATURE: u32 = 0x4342_5355;
/// `dCSWSignature`, "USBS" little-endian.
pub const CSW_SIGNATURE: u32 = 0x5342_5355;
/// A command block wrapper's length.
pub const CBW_LEN: usize = 31;
/// A command status wrapper's length.
pub const CSW_LEN: usize = 13;
/// Interface subclass "SCSI transparent command set".
pub const SUBCLASS_SCSI: u8 = 0x06;
/// Interface protocol "bulk-only transport".
pub const PROTOCOL_BOT: u8 = 0x50;
/// Class request Bulk-Only Mass Storage Reset (`bmRequestType` 0x21).
pub const BULK_ONLY_RESET: u8 = 0xff;
