#!/usr/bin/env python3
"""Generate the example recipes' firmware inputs, deterministically.

Run from anywhere: `python3 recipes/make_inputs.py`. Re-running rewrites identical files
(the recipes pin their SHA-256). Bootloaders are real files copied from tests/fixtures/.

- planck-rev4/fw/planck_rev4_default.hex, kinesis-adv-1286/fw/kinesis_adv_default.hex,
  uno-keypad/fw/uno_keypad.hex: synthetic but real-looking AVR application images: an
  interrupt vector table of `jmp` instructions (0x940C), a code body of pseudo-random words
  from a fixed-seed LCG, a USB string table with the product name, ending in a `rjmp .-2`
  loop. They are test inputs, not runnable firmware.
- promicro-macropad/fw/micro_sketch.hex and bl/caterina_micro_bl.hex: Arduino's real
  Caterina-Micro.hex production image split at 0x7000 into the sketch and the bootloader.
- bluepill-stm32duino/fw/bluepill_macropad.hex (at 0x08002000, after the STM32duino bootloader)
  and bluepill-bare/fw/bluepill_bare.bin (raw binary for 0x08000000, no bootloader): synthetic
  Cortex-M3 application images: a vector table (initial SP at the end of the STM32F103's 20 KiB
  SRAM, reset and handlers as Thumb addresses into the image), pseudo-random code words, a USB
  string with the product name, ending in `b .`. The bootloader is the real
  generic_boot20_pc13.bin from tests/fixtures/.
"""
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent
FIXTURES = ROOT.parent / "tests" / "fixtures"


def write_hex(path, mem, record_len=16):
    """mem: dict addr -> byte. Writes Intel HEX with extended linear records, LF endings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    upper = 0
    addrs = sorted(mem)
    i = 0
    while i < len(addrs):
        a = addrs[i]
        run = [mem[a]]
        j = i + 1
        while j < len(addrs) and addrs[j] == a + len(run) and len(run) < record_len and (a + len(run)) % record_len:
            run.append(mem[addrs[j]])
            j += 1
        if a >> 16 != upper:
            upper = a >> 16
            rec = [2, 0, 0, 4, upper >> 8, upper & 0xFF]
            lines.append(":" + "".join(f"{b:02X}" for b in rec) + f"{(-sum(rec)) & 0xFF:02X}")
        rec = [len(run), (a >> 8) & 0xFF, a & 0xFF, 0] + run
        lines.append(":" + "".join(f"{b:02X}" for b in rec) + f"{(-sum(rec)) & 0xFF:02X}")
        i = j
    lines.append(":00000001FF")
    path.write_text("\n".join(lines) + "\n")


def read_hex(path):
    mem, base = {}, 0
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        b = bytes.fromhex(line[1:])
        n, addr, typ = b[0], (b[1] << 8) | b[2], b[3]
        if typ == 0:
            for k in range(n):
                mem[base + addr + k] = b[4 + k]
        elif typ == 2:
            base = ((b[4] << 8) | b[5]) << 4
        elif typ == 4:
            base = ((b[4] << 8) | b[5]) << 16
    return mem


def app_image(product, size, vectors, seed):
    out = bytearray()
    body = vectors * 4
    for v in range(vectors):
        target = (body if v == 0 else body + 2 * v) // 2  # word address
        out += bytes([0x0C, 0x94, target & 0xFF, (target >> 8) & 0xFF])
    # USB string descriptor with the product name (UTF-16LE), as LUFA/QMK lay them out.
    name = product.encode("utf-16-le")
    strings = bytes([len(name) + 2, 3]) + name
    state = seed & 0xFFFFFFFF
    while len(out) < size - len(strings) - 2:
        state = (1103515245 * state + 12345) & 0x7FFFFFFF
        out += bytes([(state >> 8) & 0xFF, (state >> 16) & 0xFF])
    out += strings
    if len(out) % 2:
        out += b"\x00"
    out += bytes([0xFF, 0xCF])  # rjmp .-2
    return {a: b for a, b in enumerate(out)}


def cortex_m_app(product, base, size, seed, sram_end=0x20005000, irqs=43):
    """An STM32F103 application image at `base`: dict addr -> byte."""
    entries = 16 + irqs
    code = base + entries * 4
    reset, default = code | 1, (code + 4) | 1
    reserved = {7, 8, 9, 10, 13}
    words = [sram_end, reset] + [0 if i in reserved else default for i in range(2, entries)]
    out = bytearray(b"".join(w.to_bytes(4, "little") for w in words))
    out += bytes([0xFE, 0xE7, 0x00, 0xBF])  # reset: b . ; nop
    out += bytes([0xFE, 0xE7, 0x00, 0xBF])  # default handler: b . ; nop
    name = product.encode("utf-16-le")
    strings = bytes([len(name) + 2, 3]) + name
    state = seed & 0xFFFFFFFF
    while len(out) < size - len(strings) - 2:
        state = (1103515245 * state + 12345) & 0x7FFFFFFF
        out += bytes([(state >> 8) & 0xFF, (state >> 16) & 0xFF])
    out += strings
    if len(out) % 2:
        out += b"\x00"
    out += bytes([0xFE, 0xE7])  # b .
    return {base + a: b for a, b in enumerate(out)}


def main():
    write_hex(ROOT / "planck-rev4/fw/planck_rev4_default.hex", app_image("Planck rev4", 0x5A30, 43, 4))
    shutil.copyfile(FIXTURES / "bootloader_atmega32u4_1_0_0.hex", ROOT / "planck-rev4/bl/bootloader_atmega32u4_1_0_0.hex")

    write_hex(ROOT / "kinesis-adv-1286/fw/kinesis_adv_default.hex", app_image("Kinesis Advantage", 0x1B400, 38, 1286), 32)
    shutil.copyfile(FIXTURES / "bootloader_at90usb128_1.0.1.hex", ROOT / "kinesis-adv-1286/bl/bootloader_at90usb128_1.0.1.hex")

    write_hex(ROOT / "uno-keypad/fw/uno_keypad.hex", app_image("Uno Keypad", 0x2C80, 26, 328))
    shutil.copyfile(FIXTURES / "optiboot_atmega328.hex", ROOT / "uno-keypad/bl/optiboot_atmega328.hex")

    micro = read_hex(FIXTURES / "Caterina-Micro.hex")
    write_hex(ROOT / "promicro-macropad/fw/micro_sketch.hex", {a: b for a, b in micro.items() if a < 0x7000})
    write_hex(ROOT / "promicro-macropad/bl/caterina_micro_bl.hex", {a: b for a, b in micro.items() if a >= 0x7000})

    write_hex(ROOT / "bluepill-stm32duino/fw/bluepill_macropad.hex", cortex_m_app("Bluepill Macropad", 0x08002000, 0x6A40, 103))
    (ROOT / "bluepill-stm32duino/bl").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "generic_boot20_pc13.bin", ROOT / "bluepill-stm32duino/bl/generic_boot20_pc13.bin")
    bare = cortex_m_app("Bluepill Numpad", 0x08000000, 0x3C10, 8)
    (ROOT / "bluepill-bare/fw").mkdir(parents=True, exist_ok=True)
    (ROOT / "bluepill-bare/fw/bluepill_bare.bin").write_bytes(bytes(bare[a] for a in sorted(bare)))


if __name__ == "__main__":
    main()
