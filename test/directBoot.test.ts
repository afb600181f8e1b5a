/**
 * Direct kernel boot: the multiboot image v86 starts without a BIOS must hand the kernel
 * what Linux's 32-bit boot protocol asks for (a boot_params page with the kernel's own
 * setup header, the memory map and the command line; the protected-mode code at 1 MiB,
 * or the kernel unpacked on the host at its load address), and a kernel that cannot boot
 * this way is refused with a reason.
 */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { directBootImage, initrdPlacement, unpackKernel } from "../src/internal/directBoot.mjs"

const bzImage = (() => {
  const bytes = readFileSync(new URL("../assets/bzImage", import.meta.url))
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer
})()
const kernel = new Uint8Array(bzImage)
const MiB = 1024 * 1024
// The layout directBoot.mjs documents: the image is loaded at 0xfb000.
const IMAGE_BASE = 0xfb000
const at = (address: number) => address - IMAGE_BASE

describe("directBootImage", () => {
  const cmdline = "console=ttyS0 root=/dev/sda ro"
  const image = new Uint8Array(directBootImage(bzImage, cmdline, 64 * MiB, undefined))
  const view = new DataView(image.buffer)

  it("is a multiboot image whose header v86 accepts, loaded whole and entered at its stub", () => {
    const [magic, flags, checksum] = [view.getUint32(0, true), view.getUint32(4, true), view.getUint32(8, true)]
    expect(magic).toBe(0x1badb002)
    expect((magic + flags + checksum) >>> 0).toBe(0)
    expect(view.getUint32(16, true)).toBe(IMAGE_BASE) // load_addr
    expect(view.getUint32(20, true)).toBe(IMAGE_BASE + image.byteLength) // load_end_addr
    const entry = view.getUint32(28, true)
    // mov esi, boot_params ... jmp eax (eax = 1 MiB)
    expect(image[at(entry)]).toBe(0xbe)
    expect(view.getUint32(at(entry) + 1, true)).toBe(0xfc000)
    expect(view.getUint32(at(entry) + 12, true)).toBe(0x100000)
  })

  it("puts the kernel's protected-mode code at 1 MiB, byte for byte", () => {
    const setupBytes = ((kernel[0x1f1] ?? 0) + 1) * 512
    const loaded = image.subarray(at(0x100000))
    expect(loaded.byteLength).toBe(kernel.byteLength - setupBytes)
    expect(Buffer.compare(loaded, kernel.subarray(setupBytes))).toBe(0)
  })

  it("fills boot_params: the setup header, loader type, command line and a memory map of all RAM", () => {
    const params = at(0xfc000)
    expect(view.getUint16(params + 0x1fe, true)).toBe(0xaa55)
    expect(view.getUint32(params + 0x202, true)).toBe(0x53726448) // "HdrS"
    expect(image[params + 0x210]).toBe(0xff)
    const commandLineAt = view.getUint32(params + 0x228, true)
    const commandLine = image.subarray(at(commandLineAt), at(commandLineAt) + cmdline.length + 1)
    expect(Buffer.from(commandLine).toString("latin1")).toBe(`${cmdline}\0`)
    const entries = Array.from({ length: image[params + 0x1e8] ?? 0 }, (_, i) => {
      const offset = params + 0x2d0 + i * 20
      return [Number(view.getBigUint64(offset, true)), Number(view.getBigUint64(offset + 8, true)), view.getUint32(offset + 16, true)]
    })
    // Contiguous from 0 to the end of RAM; usable RAM is everything but the legacy hole.
    expect(entries[0]?.[0]).toBe(0)
    entries.slice(1).forEach((entry, i) => expect(entry[0]).toBe((entries[i]?.[0] ?? 0) + (entries[i]?.[1] ?? 0)))
    const last = entries[entries.length - 1]!
    expect(last[0]! + last[1]!).toBe(64 * MiB)
    const usable = entries.filter(([, , type]) => type === 1).reduce((sum, [, size]) => sum + size!, 0)
    expect(usable).toBe(64 * MiB - (0x100000 - 0x9f000))
  })

  it("tells the kernel where its initrd is", () => {
    const placement = initrdPlacement(bzImage, 3 * MiB + 5, 64 * MiB)
    expect(placement.address % 4096).toBe(0)
    expect(placement.address + placement.size).toBeLessThanOrEqual(64 * MiB)
    const withInitrd = new DataView(directBootImage(bzImage, cmdline, 64 * MiB, placement))
    expect(withInitrd.getUint32(at(0xfc000) + 0x218, true)).toBe(placement.address)
    expect(withInitrd.getUint32(at(0xfc000) + 0x21c, true)).toBe(3 * MiB + 5)
  })

  it("enters the kernel unpacked on the host at its entry point, without the decompressor in the image", () => {
    const kernelImage = unpackKernel(bzImage)!
    const entered = new Uint8Array(directBootImage(bzImage, cmdline, 64 * MiB, undefined, kernelImage))
    const enteredView = new DataView(entered.buffer)
    const entry = enteredView.getUint32(28, true)
    expect(enteredView.getUint32(at(entry) + 12, true)).toBe(kernelImage.entry)
    expect(entered.byteLength).toBeLessThan(0x100000 - IMAGE_BASE)
    expect(enteredView.getUint32(at(0xfc000) + 0x202, true)).toBe(0x53726448)
  })

  it("refuses what it cannot boot, saying why", () => {
    expect(() => directBootImage(new Uint8Array(8192).buffer, cmdline, 64 * MiB, undefined)).toThrow(/not a Linux bzImage/)
    expect(() => directBootImage(bzImage, cmdline, 8 * MiB, undefined)).toThrow(/needs \d+ bytes of RAM to unpack, the guest has 8388608/)
    expect(() => directBootImage(bzImage, "x".repeat(5000), 64 * MiB, undefined)).toThrow(/command line is 5000 bytes/)
    expect(() => initrdPlacement(bzImage, 60 * MiB, 64 * MiB)).toThrow(/does not fit/)
  })
})

describe("unpackKernel", () => {
  const header = new DataView(bzImage)
  const loadAddress = Number(header.getBigUint64(0x258, true))
  const initSize = header.getUint32(0x260, true)

  it("unpacks the bundled kernel's LZ4 payload into ELF segments within its load area, entered at its start", () => {
    const unpacked = unpackKernel(bzImage)!
    expect(unpacked.entry).toBe(loadAddress)
    expect(unpacked.segments.length).toBeGreaterThanOrEqual(2)
    for (const { address, bytes } of unpacked.segments) {
      expect(address).toBeGreaterThanOrEqual(loadAddress)
      expect(address + bytes.byteLength).toBeLessThanOrEqual(loadAddress + initSize)
    }
    // The kernel's text starts with startup_32's code, not zeros.
    expect(unpacked.segments[0]!.bytes.subarray(0, 64).some((byte) => byte !== 0)).toBe(true)
  })

  it("says a corrupt payload is corrupt instead of booting it", () => {
    const broken = kernel.slice()
    const payload = ((kernel[0x1f1] ?? 0) + 1) * 512 + header.getUint32(0x248, true)
    // Garble the middle of the compressed kernel.
    broken.fill(0xff, payload + 100_000, payload + 100_400)
    expect(() => unpackKernel(broken.buffer)).toThrow(/LZ4|segment|ELF/)
  })

  it("leaves a kernel compressed some other way to its own decompressor", () => {
    const gzipped = kernel.slice()
    const payload = ((kernel[0x1f1] ?? 0) + 1) * 512 + header.getUint32(0x248, true)
    gzipped.set([0x1f, 0x8b, 0x08, 0x00], payload)
    expect(unpackKernel(gzipped.buffer)).toBeUndefined()
  })
})
