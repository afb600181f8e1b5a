// The machine's devices: fewer than v86 builds by default. The guest kernel probes every
// device it finds while it boots, and probing costs emulated instructions and I/O port
// round trips into JavaScript: v86's network card and its empty CD-ROM drive cost the
// boot ~0.9 M emulated instructions (of 17.8 M then) and are of no use to a sandbox
// without a network or a CD. Plain JavaScript: the emulator's worker imports it.

/**
 * Options for `new V86(...)`: no network card (v86 adds an NE2000 unless told); the local
 * APIC and its timer (v86 has them only with `acpi`), the guest kernel's clock event
 * device: it reaches seconds ahead, the PIT 27 ms, and every expiry of an idle guest's
 * timer wakes its emulator (image/kernel.fragment).
 */
export const deviceOptions = {
  net_device: { type: "none" },
  acpi: true
}

/**
 * Takes the empty CD-ROM drive off the loaded machine's second IDE channel (v86 always
 * builds one): the kernel finds no device there and skips the ATAPI probe and the SCSI
 * CD-ROM set-up. Call it before the first instruction and before restoring a state. A
 * state saved with the drive brings it back (v86 restores "is a CD-ROM" with the
 * channel), so the machine always matches the guest that was saved.
 */
export const removeCdromDrive = (cpu) => {
  const drive = cpu.devices.ide.secondary.master
  drive.is_atapi = false
  drive.drive_connected = false
}
