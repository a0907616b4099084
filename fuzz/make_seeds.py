#!/usr/bin/env python3
"""Writes the seed inputs in corpus/<target>/ for the targets whose inputs are binary layouts
(config, gpt_fat, loaders, mmio, virtqueue, virtio_net); http_request's seeds are requests
written by hand. Deterministic; run from fuzz/ (`python3 make_seeds.py`). The FAT16 seed
needs mkfs.fat and mcopy (dosfstools, mtools)."""

import os
import struct
import subprocess
import tempfile
import zlib

ROOT = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- config: byte 0 even = JSON, odd = TOML -----------------------------------------------
repo = os.path.dirname(ROOT)
put("config", "json_empty", b"\x00{}")
put(
    "config",
    "json_vm",
    b'\x00{"hostname":"edge-1","network":{"mode":"dhcp"},"vms":[{"name":"web","memory_mib":64,'
    b'"vcpus":2,"kernel":"vmlinuz","initrd":"initrd.cpio","cmdline":"console=ttyS0",'
    b'"autostart":true}]}',
)
put("config", "json_syntax_error", b'\x00{"hostname": "a",, }')
with open(os.path.join(repo, "config", "demo.toml"), "rb") as f:
    put("config", "toml_demo", b"\x01" + f.read())
with open(os.path.join(repo, "config", "appliance.example.toml"), "rb") as f:
    put("config", "toml_example", b"\x03" + f.read())
put("config", "toml_invalid_vm", b'\x01[[vms]]\nname = "Bad Name"\nmemory_mib = 3\n')


# --- gpt_fat: byte 0 = mode (bit 0 fix CRCs, bits 1-3 disk size), then the disk -----------
def gpt_disk(sectors, parts):
    """A GPT disk of `sectors` sectors with 4 entries of 128 bytes."""
    disk = bytearray(sectors * 512)
    # Protective MBR.
    disk[446 + 4] = 0xEE
    struct.pack_into("<II", disk, 446 + 8, 1, min(sectors - 1, 0xFFFFFFFF))
    disk[510:512] = b"\x55\xaa"
    entries = bytearray(4 * 128)
    for i, (first, last, name) in enumerate(parts):
        e = 128 * i
        entries[e : e + 16] = bytes.fromhex("A2A0D0EBE5B9334487C068B6B72699C7")  # basic data
        entries[e + 16 : e + 32] = bytes(range(i * 16, i * 16 + 16))
        struct.pack_into("<QQQ", entries, e + 32, first, last, 0)
        n = name.encode("utf-16-le")
        entries[e + 56 : e + 56 + len(n)] = n
    ecrc = zlib.crc32(entries)

    def header(my_lba, alt_lba, entries_lba):
        h = bytearray(92)
        h[0:8] = b"EFI PART"
        struct.pack_into("<IIII", h, 8, 0x10000, 92, 0, 0)
        struct.pack_into("<QQQQ", h, 24, my_lba, alt_lba, 3, sectors - 3)
        h[56:72] = bytes(range(0xA0, 0xB0))
        struct.pack_into("<QIII", h, 72, entries_lba, 4, 128, ecrc)
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return h

    disk[512 : 512 + 92] = header(1, sectors - 1, 2)
    disk[1024 : 1024 + 512] = entries
    disk[(sectors - 2) * 512 : (sectors - 1) * 512] = entries
    disk[(sectors - 1) * 512 : (sectors - 1) * 512 + 92] = header(sectors - 1, 1, sectors - 2)
    return bytes(disk)


two = gpt_disk(32, [(3, 15, "keel-store"), (16, 28, "guest-data")])
put("gpt_fat", "gpt_two_partitions", b"\x00" + two)
put("gpt_fat", "gpt_fix_crcs", b"\x01" + two)
broken = bytearray(two)
broken[512 + 30] ^= 0xFF  # primary header damaged: the backup must be used
put("gpt_fat", "gpt_primary_damaged", b"\x00" + bytes(broken))
put("gpt_fat", "gpt_one_partition", b"\x00" + gpt_disk(16, [(3, 12, "config")]))

with tempfile.TemporaryDirectory() as tmp:
    img = os.path.join(tmp, "fat16.img")
    subprocess.run(
        ["mkfs.fat", "-F", "16", "-C", "-f", "1", "-r", "16", "-s", "1", "-i", "4b45454c",
         "-n", "KEELSTORE", img, "2100"],
        check=True, stdout=subprocess.DEVNULL,
    )
    for name, content in [
        ("hello.txt", b"hello from the store\n"),
        ("vmlinuz", bytes((i * 7) % 251 for i in range(1500))),
    ]:
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(content)
        subprocess.run(["mcopy", "-m", "-i", img, p, "::" + name], check=True,
                       env=dict(os.environ, MTOOLS_SKIP_CHECK="1", TZ="UTC", SOURCE_DATE_EPOCH="0"))
    with open(img, "rb") as f:
        fat = f.read()
    used = max(i for i, b in enumerate(fat) if b) + 1
    used = (used + 511) // 512 * 512
    # n = 3: an 8192-sector disk, the volume's 4200 sectors inside it.
    put("gpt_fat", "fat16_two_files", bytes([3 << 1]) + fat[:used])


# --- loaders: byte 0 = mode (bits 0-1 loader, bit 2 initrd, bit 3 RSDP) ----------------------
def bzimage(version=0x020F, kernel_len=0x1000):
    setup_sects = 4
    setup = (setup_sects + 1) * 512
    img = bytearray(setup + kernel_len)
    img[0x1F1] = setup_sects
    struct.pack_into("<I", img, 0x1F4, kernel_len // 16)
    struct.pack_into("<H", img, 0x1FE, 0xAA55)
    img[0x200:0x202] = b"\xeb\x66"
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, version)
    img[0x211] = 1  # LOADED_HIGH
    struct.pack_into("<I", img, 0x22C, 0x7FFFFFFF)
    struct.pack_into("<I", img, 0x230, 0x200000)
    img[0x234] = 1
    struct.pack_into("<H", img, 0x236, 0x3)
    struct.pack_into("<I", img, 0x238, 2047)
    struct.pack_into("<Q", img, 0x258, 0x100000)
    struct.pack_into("<I", img, 0x260, 1 << 20)
    for i in range(kernel_len):
        img[setup + i] = i % 251 + 1
    return bytes(img)


def pvh_elf():
    """ELF64 with one PT_LOAD at 1 MiB and a PT_NOTE holding XEN_ELFNOTE_PHYS32_ENTRY."""
    code = bytes([0xF4] * 64)  # hlt
    desc = struct.pack("<I", 0x100000)
    note = struct.pack("<III", 4, len(desc), 18) + b"Xen\0" + desc
    ehdr_len, phdr_len = 64, 56
    note_off = ehdr_len + 2 * phdr_len
    code_off = note_off + len(note)
    ehdr = bytearray(64)
    ehdr[0:4] = b"\x7fELF"
    ehdr[4], ehdr[5], ehdr[6] = 2, 1, 1
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 2, 0x3E, 1, 0x100000, ehdr_len, 0, 0,
                     ehdr_len, phdr_len, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, code_off, 0x100000, 0x100000, len(code),
                       len(code) + 0x1000, 0x1000)
    pnote = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    return bytes(ehdr) + load + pnote + note + code


put("loaders", "bzimage", b"\x00" + bzimage())
put("loaders", "bzimage_initrd_rsdp", b"\x0c" + bzimage() + bytes(range(256)) * 4)
put("loaders", "bzimage_old_protocol", b"\x03" + bzimage(version=0x020B))
put("loaders", "pvh_elf", b"\x01" + pvh_elf())
put("loaders", "pvh_elf_initrd", b"\x05" + pvh_elf() + b"initrd" * 20)
put("loaders", "flat_boot_sector", b"\x02" + b"\xfa\xf4" + bytes(508) + b"\x55\xaa")


# --- mmio: mode, RIP, CR3, CS.base, value, RAX..R15, then RAM from 0 --------------------------
def mmio(mode, rip, cr3, cs_base, value, gprs, ram):
    g = list(gprs) + [0] * (16 - len(gprs))
    return bytes([mode]) + struct.pack("<4Q", rip, cr3, cs_base, value) + struct.pack("<16Q", *g) + ram


# Real mode (16-bit): mov [bx], al at 0x100.
put("mmio", "real_store", mmio(0, 0x100, 0, 0, 0, [0x5A, 0, 0, 0xB000], bytes(0x100) + b"\x88\x07"))
# Protected mode, 32-bit code, no paging: mov eax, [ebx] at 0x200.
put("mmio", "prot32_load", mmio(1 | 16, 0x200, 0, 0, 0xDEADBEEF, [0, 0, 0, 0xFEC00000],
                                bytes(0x200) + b"\x8b\x03"))
# Long mode: identity map of the first 2 MiB (PML4 0x1000, PDPT 0x2000, PD 0x3000), code at
# 0x4000: or dword [rdi+0x10], 0x80 (a read-modify-write), then movzx eax, word [rsi].
ram = bytearray(0x4010)
struct.pack_into("<Q", ram, 0x1000, 0x2003)
struct.pack_into("<Q", ram, 0x2000, 0x3003)
struct.pack_into("<Q", ram, 0x3000, 0x83)
ram[0x4000:0x4004] = b"\x83\x4f\x10\x80"
ram[0x4004:0x4007] = b"\x0f\xb7\x06"
lm = 1 | 2 | 4 | 8 | 32
put("mmio", "long_rmw", mmio(lm, 0x4000, 0x1000, 0, 0x1, [0, 0, 0, 0, 0, 0, 0xFEE00000, 0xFEE00000], bytes(ram)))
put("mmio", "long_movzx", mmio(lm, 0x4004, 0x1000, 0, 0xBEEF, [0, 0, 0, 0, 0, 0, 0xFEE00000], bytes(ram)))
# 64-bit store with a REX prefix: mov [r8], r9.
ram2 = bytearray(ram)
ram2[0x4000:0x4003] = b"\x4d\x89\x08"
put("mmio", "long_store_rex", mmio(lm, 0x4000, 0x1000, 0, 0, [0] * 8 + [0xFED00000, 0x1122334455667788], bytes(ram2)))


# --- virtqueue / virtio_net: 32 register bytes, then RAM from 0 ------------------------------
def queue_regs(flags, size=8, desc=0x0, avail=0x200, used=0x400, frames=(0, 0, 0, 0)):
    r = bytearray(32)
    struct.pack_into("<QQQ", r, 0, desc, avail, used)
    r[24] = flags
    struct.pack_into("<H", r, 26, size)
    r[28:32] = bytes(frames)
    return bytes(r)


def queue_ram(chains, buffers_at=0x1000, extra=b""):
    """`chains`: lists of (len, writable); descriptors from 0, avail ring at 0x200."""
    ram = bytearray(0x1000)
    d, addr = 0, buffers_at
    heads = []
    for chain in chains:
        heads.append(d)
        for i, (length, writable) in enumerate(chain):
            flags = (1 if i + 1 < len(chain) else 0) | (2 if writable else 0)
            struct.pack_into("<QIHH", ram, 16 * d, addr, length, flags, d + 1 if flags & 1 else 0)
            addr += length
            d += 1
    struct.pack_into("<HH", ram, 0x200, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", ram, 0x204 + 2 * i, h)
    return bytes(ram) + extra


put("virtqueue", "two_chains", queue_regs(0) + queue_ram([[(16, False), (64, True)], [(32, True)]]))
put("virtqueue", "event_idx", queue_regs(1) + queue_ram([[(8, False)], [(8, True)], [(8, True)]]))
blk_req = struct.pack("<IIQ", 0, 0, 3)  # VIRTIO_BLK_T_IN, sector 3
put("virtqueue", "blk_read", queue_regs(2) + queue_ram([[(16, False), (512, True), (1, True)]], extra=blk_req))
blk_write = struct.pack("<IIQ", 1, 0, 15)  # VIRTIO_BLK_T_OUT, the last sector
put("virtqueue", "blk_write", queue_regs(2) + queue_ram([[(16, False), (512, False), (1, True)]], extra=blk_write + bytes(range(256)) * 2))
put("virtio_net", "rx_two_frames", queue_regs(0, frames=(8, 20, 0, 0)) + queue_ram([[(2048, True)], [(2048, True)]]))
put("virtio_net", "rx_mrg", queue_regs(4, frames=(200, 0, 0, 0)) + queue_ram([[(512, True)], [(512, True)], [(2048, True)]]))
tx_frame = bytes(12) + bytes.fromhex("ffffffffffff020000000001 0806".replace(" ", "")) + bytes(46)
put("virtio_net", "tx_header_and_frame", queue_regs(2) + queue_ram([[(12, False), (60, False)]], extra=tx_frame))
put("virtio_net", "tx_one_buffer", queue_regs(2) + queue_ram([[(72, False)]], extra=tx_frame))


# --- websocket: byte 0 picks the read size; then masked client frames ---------------------
def ws_frame(opcode, payload, fin=True, key=b"\x37\xfa\x21\x3d"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


put("websocket", "token_then_typing",
    b"\x05" + ws_frame(1, b'{"token":"t"}') + ws_frame(2, b"uname -r\r"))
put("websocket", "fragments_and_ping",
    b"\x00" + ws_frame(1, b"hel", fin=False) + ws_frame(9, b"p") + ws_frame(0, b"lo"))
put("websocket", "close_1000", b"\x03" + ws_frame(8, b"\x03\xe8bye"))
put("websocket", "long_binary", b"\x10" + ws_frame(2, bytes(range(200))))
