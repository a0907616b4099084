//! Names for class codes and for the devices Keel meets most (QEMU, Bochs, its own drivers).
//!
//! Class and subclass names follow the PCI Code and ID Assignment Specification (rev 1.x),
//! §1 "Base Class" tables, shortened for one-line listings.

/// The base class name, or `None` for an unassigned code.
pub fn class_name(class: u8) -> Option<&'static str> {
    Some(match class {
        0x00 => "unclassified",
        0x01 => "storage",
        0x02 => "network",
        0x03 => "display",
        0x04 => "multimedia",
        0x05 => "memory",
        0x06 => "bridge",
        0x07 => "communication",
        0x08 => "system",
        0x09 => "input",
        0x0a => "docking",
        0x0b => "processor",
        0x0c => "serial-bus",
        0x0d => "wireless",
        0x0e => "intelligent-io",
        0x0f => "satellite",
        0x10 => "crypto",
        0x11 => "signal-processing",
        0x12 => "accelerator",
        0x13 => "instrumentation",
        0x40 => "coprocessor",
        0xff => "unassigned",
        _ => return None,
    })
}

/// The subclass name within `class`, or `None` when not in the table.
pub fn subclass_name(class: u8, subclass: u8) -> Option<&'static str> {
    if subclass == 0x80 {
        return Some("other");
    }
    Some(match (class, subclass) {
        (0x00, 0x01) => "vga-compatible",
        (0x01, 0x00) => "scsi",
        (0x01, 0x01) => "ide",
        (0x01, 0x02) => "floppy",
        (0x01, 0x04) => "raid",
        (0x01, 0x05) => "ata",
        (0x01, 0x06) => "sata",
        (0x01, 0x07) => "sas",
        (0x01, 0x08) => "nvm",
        (0x01, 0x09) => "ufs",
        (0x02, 0x00) => "ethernet",
        (0x02, 0x01) => "token-ring",
        (0x02, 0x02) => "fddi",
        (0x02, 0x03) => "atm",
        (0x02, 0x04) => "isdn",
        (0x02, 0x07) => "infiniband",
        (0x03, 0x00) => "vga",
        (0x03, 0x01) => "xga",
        (0x03, 0x02) => "3d",
        (0x04, 0x00) => "video",
        (0x04, 0x01) => "audio",
        (0x04, 0x03) => "hd-audio",
        (0x05, 0x00) => "ram",
        (0x05, 0x01) => "flash",
        (0x06, 0x00) => "host",
        (0x06, 0x01) => "isa",
        (0x06, 0x02) => "eisa",
        (0x06, 0x04) => "pci-to-pci",
        (0x06, 0x05) => "pcmcia",
        (0x06, 0x07) => "cardbus",
        (0x06, 0x09) => "semi-transparent pci-to-pci",
        (0x07, 0x00) => "serial",
        (0x07, 0x01) => "parallel",
        (0x07, 0x02) => "multiport serial",
        (0x07, 0x03) => "modem",
        (0x08, 0x00) => "pic",
        (0x08, 0x01) => "dma",
        (0x08, 0x02) => "timer",
        (0x08, 0x03) => "rtc",
        (0x08, 0x04) => "hotplug",
        (0x08, 0x05) => "sd-host",
        (0x08, 0x06) => "iommu",
        (0x09, 0x00) => "keyboard",
        (0x09, 0x02) => "mouse",
        (0x0c, 0x00) => "firewire",
        (0x0c, 0x03) => "usb",
        (0x0c, 0x04) => "fibre-channel",
        (0x0c, 0x05) => "smbus",
        (0x0c, 0x07) => "ipmi",
        (0x0d, 0x11) => "bluetooth",
        (0x0d, 0x20) => "802.11a",
        (0x0d, 0x21) => "802.11b",
        _ => return None,
    })
}

/// A short name for a known vendor:device pair (what Keel drives or QEMU/Bochs present).
pub fn device_name(vendor: u16, device: u16) -> Option<&'static str> {
    Some(match (vendor, device) {
        (0x8086, 0x100e) => "e1000",
        (0x8086, 0x100f) => "e1000 (82545EM)",
        (0x8086, 0x100c) => "e1000 (82544GC)",
        (0x8086, 0x10d3) => "e1000e (82574L)",
        (0x8086, 0x1237) => "i440fx",
        (0x8086, 0x7000) => "piix3 isa",
        (0x8086, 0x7010) => "piix3 ide",
        (0x8086, 0x7020) => "piix3 usb",
        (0x8086, 0x7113) => "piix4 acpi",
        (0x8086, 0x29c0) => "q35",
        (0x8086, 0x2918) => "ich9 lpc",
        (0x8086, 0x2922) => "ich9 ahci",
        (0x8086, 0x2930) => "ich9 smbus",
        (0x1234, 0x1111) => "bochs-display",
        (0x1af4, 0x1000) | (0x1af4, 0x1041) => "virtio-net",
        (0x1af4, 0x1001) | (0x1af4, 0x1042) => "virtio-blk",
        (0x1af4, 0x1003) | (0x1af4, 0x1043) => "virtio-console",
        (0x1af4, 0x1005) | (0x1af4, 0x1044) => "virtio-rng",
        (0x1b36, 0x0001) => "pci-bridge",
        (0x1b36, 0x0008) => "pcie host",
        (0x1b36, 0x000c) => "pcie-root-port",
        (0x1b36, 0x000d) => "qemu-xhci",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(class_name(0x02), Some("network"));
        assert_eq!(subclass_name(0x02, 0x00), Some("ethernet"));
        assert_eq!(subclass_name(0x06, 0x80), Some("other"));
        assert_eq!(subclass_name(0x06, 0x42), None);
        assert_eq!(class_name(0x42), None);
        assert_eq!(device_name(0x8086, 0x100e), Some("e1000"));
        assert_eq!(device_name(0x1af4, 0x1041), Some("virtio-net"));
        assert_eq!(device_name(0x1af4, 0x1000), Some("virtio-net"));
        assert_eq!(device_name(0xabcd, 0x1234), None);
    }
}
