// Direct kernel boot: starts a bzImage without a BIOS. SeaBIOS's power-on self test, the
// VGA BIOS and the kernel's real-mode setup code cost ~0.5 s of a ~2.4 s cold boot on the
// emulated CPU (most of it code that runs once, interpreted). v86 can start a multiboot
// image without a BIOS, in 32-bit protected mode; this module makes a tiny multiboot
// image that enters the kernel through Linux's 32-bit boot protocol
// (Documentation/arch/x86/boot.rst), and does the few things the kernel expects the
// firmware to have done to the chipset. The kernel itself is unpacked on the host when
// it is LZ4-compressed (as the bundled one is), which skips the kernel's own decompressor
// (~12 M emulated instructions). Plain JavaScript: the emulator's worker imports it.

import { decodeLz4Legacy, isLz4Legacy } from "./lz4.mjs"

const MULTIBOOT_MAGIC = 0x1badb002
/** Multiboot header flags: a memory map wanted (bit 1); load address fields present (bit 16). */
const MULTIBOOT_FLAGS = 0x00010002
const SETUP_HEADER_MAGIC = 0x53726448 // "HdrS"

// Where things go in guest memory. The protected-mode kernel must sit at 1 MiB; the
// boot stub, boot_params and command line go just below it, above the VGA window, in a
// range the memory map marks reserved so the kernel never hands it out.
const IMAGE_BASE = 0xfb000
const BOOT_PARAMS = 0xfc000
const COMMAND_LINE = 0xfd000
const COMMAND_LINE_ROOM = 0x2000
const KERNEL_BASE = 0x100000
const LOW_MEMORY_END = 0x9f000

/** The bzImage checked, its bytes and header, and its protected-mode code (the kernel's decompressor and payload). Throws if it is not a bzImage we can boot. */
const protectedModeCode = (bzImage) => {
  const kernel = new Uint8Array(bzImage)
  const header = new DataView(kernel.buffer, kernel.byteOffset, kernel.byteLength)
  if (kernel.byteLength < 0x1000 || header.getUint16(0x1fe, true) !== 0xaa55 || header.getUint32(0x202, true) !== SETUP_HEADER_MAGIC) {
    throw new Error("the kernel is not a Linux bzImage (no boot sector signature or setup header)")
  }
  const protocol = header.getUint16(0x206, true)
  if (protocol < 0x20a) {
    throw new Error(`the kernel's boot protocol is ${(protocol >> 8)}.${protocol & 0xff}; direct boot needs 2.10 or later`)
  }
  if ((kernel[0x211] & 1) === 0) throw new Error("the kernel is not a bzImage (it does not load high)")
  const setupSectors = kernel[0x1f1] || 4
  return { bytes: kernel, header, protectedMode: kernel.subarray((setupSectors + 1) * 512) }
}

const ELF_MAGIC = 0x464c457f
const PT_LOAD = 1

/**
 * The kernel proper, unpacked on the host as the kernel's decompressor would (arch/x86/
 * boot/compressed/misc.c): the loadable segments of its ELF at their physical addresses,
 * and its entry point (startup_32, entered with %esi = boot_params). Undefined when the
 * payload is not LZ4-compressed: the kernel's own decompressor then runs in the guest.
 * Throws if an LZ4 payload is corrupt or its kernel does not fit where it must go.
 */
export const unpackKernel = (bzImage) => {
  const { header, protectedMode } = protectedModeCode(bzImage)
  const payloadAt = header.getUint32(0x248, true)
  const payloadLength = header.getUint32(0x24c, true)
  const payload = protectedMode.subarray(payloadAt, payloadAt + payloadLength)
  if (payload.byteLength !== payloadLength || !isLz4Legacy(payload)) return undefined
  // The kernel's build appends the unpacked size (scripts/Makefile.lib, size_append).
  const size = new DataView(payload.buffer, payload.byteOffset + payloadLength - 4).getUint32(0, true)
  if (size > header.getUint32(0x260, true)) throw new Error(`the kernel unpacks to ${size} bytes, over its init_size`)
  const elf = decodeLz4Legacy(payload, size)
  const view = new DataView(elf.buffer)
  if (elf.byteLength < 52 || view.getUint32(0, true) !== ELF_MAGIC || elf[4] !== 1) throw new Error("the unpacked kernel is not a 32-bit ELF")
  const loadStart = Number(header.getBigUint64(0x258, true))
  const loadEnd = unpackedKernelEnd(header)
  const programHeaders = view.getUint32(0x1c, true)
  const segments = []
  for (let i = 0; i < view.getUint16(0x2c, true); i++) {
    const at = programHeaders + i * view.getUint16(0x2a, true)
    if (at + 32 > elf.byteLength || view.getUint32(at, true) !== PT_LOAD) continue
    const offset = view.getUint32(at + 4, true)
    const address = view.getUint32(at + 12, true) // p_paddr: where the decompressor puts it
    const fileSize = view.getUint32(at + 16, true)
    const memorySize = view.getUint32(at + 20, true)
    if (offset + fileSize > elf.byteLength || address < loadStart || address + memorySize > loadEnd) {
      throw new Error(`the kernel's segment ${i} does not lie within its load area`)
    }
    // Bytes past fileSize are zero: the guest's RAM is, before its first instruction.
    segments.push({ address, bytes: elf.subarray(offset, offset + fileSize) })
  }
  const entry = view.getUint32(0x18, true)
  if (!segments.some(({ address, bytes }) => entry >= address && entry < address + bytes.byteLength)) {
    throw new Error("the kernel's entry point is outside its code")
  }
  return { entry, segments }
}

/**
 * The multiboot image that boots `bzImage` with `cmdline` in a guest of `memoryBytes`,
 * its initrd (if any) at `initrd.address`: into `kernel` (from `unpackKernel`, whose
 * segments the caller copies into RAM) if given, else into the kernel's decompressor at
 * 1 MiB, which the image then holds. Throws an Error saying what is wrong with a kernel
 * it cannot boot this way.
 */
export const directBootImage = (bzImage, cmdline, memoryBytes, initrd, kernel) => {
  const { bytes, header, protectedMode } = protectedModeCode(bzImage)
  if (unpackedKernelEnd(header) > memoryBytes) {
    throw new Error(`the kernel needs ${unpackedKernelEnd(header)} bytes of RAM to unpack, the guest has ${memoryBytes}`)
  }
  const commandLine = new TextEncoder().encode(cmdline + "\0")
  const commandLineMax = Math.min(header.getUint32(0x238, true) + 1, COMMAND_LINE_ROOM)
  if (commandLine.byteLength > commandLineMax) {
    throw new Error(`the kernel command line is ${commandLine.byteLength - 1} bytes, over the kernel's ${commandLineMax - 1}`)
  }

  const image = new Uint8Array(kernel ? COMMAND_LINE + COMMAND_LINE_ROOM - IMAGE_BASE : KERNEL_BASE - IMAGE_BASE + protectedMode.byteLength)
  const view = new DataView(image.buffer)
  // Multiboot header, "a.out kludge" form: the whole image is copied to IMAGE_BASE.
  view.setUint32(0, MULTIBOOT_MAGIC, true)
  view.setUint32(4, MULTIBOOT_FLAGS, true)
  view.setUint32(8, (-(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)) >>> 0, true)
  view.setUint32(12, IMAGE_BASE, true) // header_addr
  view.setUint32(16, IMAGE_BASE, true) // load_addr
  view.setUint32(20, IMAGE_BASE + image.byteLength, true) // load_end_addr
  view.setUint32(24, IMAGE_BASE + image.byteLength, true) // bss_end_addr
  const entry = IMAGE_BASE + 32
  view.setUint32(28, entry, true)
  // The stub v86 enters (flat 32-bit segments, interrupts off): the 32-bit boot protocol
  // wants %esi = boot_params and %ebp, %edi, %ebx zero.
  image.set([
    0xbe, ...littleEndian32(BOOT_PARAMS), // mov esi, BOOT_PARAMS
    0x31, 0xed, 0x31, 0xff, 0x31, 0xdb, // xor ebp, ebp; xor edi, edi; xor ebx, ebx
    0xb8, ...littleEndian32(kernel?.entry ?? KERNEL_BASE), // mov eax, the kernel's entry
    0xff, 0xe0 // jmp eax
  ], entry - IMAGE_BASE)

  // boot_params ("the zero page"): the kernel's setup header, filled in as a boot loader does.
  const params = BOOT_PARAMS - IMAGE_BASE
  image.set(bytes.subarray(0x1f1, 0x202 + bytes[0x201]), params + 0x1f1)
  image[params + 0x210] = 0xff // type_of_loader: "undefined"
  view.setUint32(params + 0x218, initrd?.address ?? 0, true) // ramdisk_image
  view.setUint32(params + 0x21c, initrd?.size ?? 0, true) // ramdisk_size
  view.setUint32(params + 0x228, COMMAND_LINE, true) // cmd_line_ptr
  view.setUint32(params + 0x1e0, (memoryBytes - KERNEL_BASE) >> 10, true) // alt_mem_k
  const memoryMap = [
    [0, LOW_MEMORY_END, 1],
    [LOW_MEMORY_END, KERNEL_BASE - LOW_MEMORY_END, 2], // EBDA, VGA window, ROM area: reserved
    [KERNEL_BASE, memoryBytes - KERNEL_BASE, 1]
  ]
  image[params + 0x1e8] = memoryMap.length
  memoryMap.forEach(([address, size, type], i) => {
    const entryOffset = params + 0x2d0 + i * 20
    view.setBigUint64(entryOffset, BigInt(address), true)
    view.setBigUint64(entryOffset + 8, BigInt(size), true)
    view.setUint32(entryOffset + 16, type, true)
  })
  image.set(commandLine, COMMAND_LINE - IMAGE_BASE)
  if (!kernel) image.set(protectedMode, KERNEL_BASE - IMAGE_BASE)
  return image.buffer
}

/**
 * Where the initrd goes: the top of RAM, page aligned, below the kernel's limit for it
 * (as QEMU places it). Throws if it does not fit above the unpacked kernel.
 */
export const initrdPlacement = (bzImage, initrdBytes, memoryBytes) => {
  const header = new DataView(bzImage)
  const limit = Math.min(memoryBytes, header.getUint32(0x22c, true) + 1)
  const address = (limit - initrdBytes) & ~0xfff
  if (address < unpackedKernelEnd(header)) {
    throw new Error(`the initrd (${initrdBytes} bytes) does not fit in the guest's RAM beside the kernel`)
  }
  return { address, size: initrdBytes }
}

/** Where the kernel's unpacking ends in RAM: its load address (pref_address) plus init_size. */
const unpackedKernelEnd = (header) => Number(header.getBigUint64(0x258, true)) + header.getUint32(0x260, true)

/**
 * A direct boot of `bzImage` (and `initrd`, bytes, if any): the multiboot `image` for
 * v86's `multiboot` option, and `prepare`, to call on the loaded machine's CPU before its
 * first instruction (it copies the unpacked kernel and the initrd in, then lets go of
 * them, and sets up the chipset). Throws an Error saying why a kernel cannot boot this way.
 */
export const directBoot = (bzImage, cmdline, memoryBytes, initrd) => {
  const placement = initrd === undefined ? undefined : initrdPlacement(bzImage, initrd.byteLength, memoryBytes)
  const kernel = unpackKernel(bzImage)
  const image = directBootImage(bzImage, cmdline, memoryBytes, placement, kernel)
  let pending = [...(kernel?.segments ?? []), ...(initrd === undefined ? [] : [{ address: placement.address, bytes: initrd }])]
  return {
    image,
    prepare: (cpu) => {
      for (const { address, bytes } of pending) cpu.write_blob(bytes, address)
      pending = []
      setUpChipset(cpu)
    }
  }
}

/** The PCI interrupt lines SeaBIOS routes the PIIX3's four PIRQ pins to. */
const PIRQ_ROUTE = [10, 10, 11, 11]

/**
 * What the kernel expects the firmware to have done, on v86's chipset (what SeaBIOS's
 * PIIX setup does): route the PCI interrupt pins (PIRQA-D) to IRQs, tell each device its
 * line, make those IRQs level-triggered (ELCR), and turn on the IDE controller's two
 * channels (without the decode bits, ata_piix ignores both and the root disk is missing).
 * Called on a loaded machine before it first runs.
 */
export const setUpChipset = (cpu) => {
  const pci = cpu.devices.pci
  PIRQ_ROUTE.forEach((irq, pin) => (pci.isa_bridge_space8[0x60 + pin] = irq))
  let levelTriggered = 0
  for (let id = 0; id < pci.device_spaces.length; id++) {
    const config = configBytes(pci.device_spaces[id])
    if (config === undefined || config[0x3d] === 0) continue
    // v86's routing of a device's pin (src/pci.js, raise_irq): slot and pin, both from 1.
    const irq = PIRQ_ROUTE[(config[0x3d] - 1 + (id >> 3) - 1) & 3]
    config[0x3c] = irq
    levelTriggered |= 1 << irq
  }
  const ide = configBytes(pci.device_spaces[0x1e << 3])
  if (ide !== undefined) {
    ide[0x41] |= 0x80 // IDETIM primary: decode enable
    ide[0x43] |= 0x80 // IDETIM secondary: decode enable
  }
  cpu.io.port_write8(0x4d0, levelTriggered & 0xff)
  cpu.io.port_write8(0x4d1, levelTriggered >> 8)
}

const configBytes = (space) => space === undefined ? undefined : new Uint8Array(space.buffer, space.byteOffset, 256)

const littleEndian32 = (value) => [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24]
