//! The `newc` cpio format the kernel unpacks as an initramfs
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`), and a busybox initramfs on
//! top of it.

/// A `newc` cpio archive, what the kernel unpacks as an initramfs. Parents must be added
/// before what they hold (the kernel's unpacker creates no directories by itself).
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// One entry: `mode` holds the file type bits; `rdev` is (major, minor) for devices.
    ///
    /// # Panics
    ///
    /// If `data` is 4 GiB or larger: newc sizes are 32-bit (an initramfs never comes near).
    pub fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let size = u32::try_from(data.len()).expect("a cpio newc entry holds less than 4 GiB");
        let name_size =
            u32::try_from(name.len() + 1).expect("a cpio newc name is shorter than 4 GiB");
        let fields = [
            self.ino, mode, 0, 0, 1, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// A directory (0755).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    /// A regular file with permission bits `mode`.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data, (0, 0));
    }

    /// A symbolic link `name` → `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0));
    }

    /// A character device (0600).
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

/// An initramfs that runs `init_body` with busybox's `sh` as `/init`: directories `bin`,
/// `dev`, `proc`, `sys`, `lib`, `tmp`, `/dev/console`, `/bin/busybox`, and `/bin/<applet>` →
/// `busybox` for each of `applets` (`sh` always). The script starts with `PATH=/bin`. Add
/// further files to the returned archive, then [`Cpio::finish`] it.
pub fn busybox_initramfs(busybox: &[u8], init_body: &str, applets: &[&str]) -> Cpio {
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "lib", "tmp"] {
        c.dir(d);
    }
    c.char_device("dev/console", 5, 1);
    c.file("bin/busybox", 0o755, busybox);
    let mut linked = vec!["sh"];
    for a in applets {
        if !linked.contains(a) {
            linked.push(a);
        }
    }
    for applet in linked {
        c.symlink(&format!("bin/{applet}"), "busybox");
    }
    let init = format!("#!/bin/busybox sh\nexport PATH=/bin\n{init_body}");
    c.file("init", 0o755, init.as_bytes());
    c
}

/// (name, mode, data) of each entry of a well-formed archive, read back (for tests).
#[cfg(test)]
pub(crate) fn entries(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        assert_eq!(&archive[at..at + 6], b"070701", "magic at {at}");
        let field = |i: usize| hex(&archive[at + 6 + i * 8..at + 14 + i * 8]);
        let (mode, size, name_len) = (field(1), field(6) as usize, field(11) as usize);
        let name_at = at + 110;
        let name = std::str::from_utf8(&archive[name_at..name_at + name_len - 1])
            .unwrap()
            .to_owned();
        assert_eq!(archive[name_at + name_len - 1], 0);
        let data_at = (name_at + name_len).next_multiple_of(4);
        let data = archive[data_at..data_at + size].to_vec();
        at = (data_at + size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            assert_eq!(at, archive.len());
            return out;
        }
        out.push((name, mode, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_read_back() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        c.symlink("bin/y", "x");
        c.char_device("dev/console", 5, 1);
        let archive = c.finish();
        assert_eq!(archive.len() % 4, 0);
        let e = entries(&archive);
        assert_eq!(e[0], ("bin".into(), 0o040755, vec![]));
        assert_eq!(e[1], ("bin/x".into(), 0o100755, b"hello".to_vec()));
        assert_eq!(e[2], ("bin/y".into(), 0o120777, b"x".to_vec()));
        assert_eq!(e[3].1, 0o020600);
    }

    #[test]
    fn busybox_initramfs_links_the_applets() {
        let archive = busybox_initramfs(b"BB", "echo hi\n", &["mount", "sh", "poweroff"]).finish();
        let e = entries(&archive);
        let names: Vec<&str> = e.iter().map(|(n, _, _)| n.as_str()).collect();
        for n in [
            "bin",
            "dev/console",
            "bin/busybox",
            "bin/sh",
            "bin/mount",
            "init",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert_eq!(names.iter().filter(|n| **n == "bin/sh").count(), 1);
        let init = e.iter().find(|(n, _, _)| n == "init").unwrap();
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.2, b"#!/bin/busybox sh\nexport PATH=/bin\necho hi\n");
        let bin = names.iter().position(|n| *n == "bin").unwrap();
        let busybox = names.iter().position(|n| *n == "bin/busybox").unwrap();
        assert!(bin < busybox, "parents first");
    }
}
