//! keel-vmm (being written)
