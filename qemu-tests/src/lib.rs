//! keel qemu tests (being written)
