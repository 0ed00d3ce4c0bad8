//! The TCG PC Client (UEFI) event log: parsing, replay and measured-boot policies.
