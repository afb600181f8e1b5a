// The root disk as v86 sees it, read from a file on the host instead of held in memory.
// The bundled root filesystem is an uncompressed squashfs (~40 MB): the guest reads it
// without decompressing anything, which saves it ~45 emulated instructions per byte,
// and every sandbox of the machine shares the one file through the host's page cache
// instead of keeping its own copy. Writes never reach the file: a guest may write its
// raw disk, but only into this sandbox's own copy of the sectors it wrote (copy on
// write), which a saved state carries. Plain JavaScript: the emulator's worker imports it.

import { closeSync, fstatSync, openSync, readSync } from "node:fs"

const SECTOR = 512

/**
 * A disk of `byteLength` bytes backed by the file at `path` (opened now, read-only), with
 * the interface of v86's disk buffers (src/buffer.js): load, get, get_and_cache,
 * get_from_cache, set, get_state, set_state, all over one synchronous `read`. Give it to
 * v86 as the disk itself (`hda: disk`).
 * Throws if the file cannot be opened or is shorter than the disk.
 */
export class FileDisk {
  constructor(path, byteLength) {
    this.fd = openSync(path, "r")
    const size = fstatSync(this.fd).size
    if (size < byteLength) {
      closeSync(this.fd)
      throw new Error(`the disk image "${path}" has ${size} bytes, ${byteLength} expected`)
    }
    this.byteLength = byteLength
    /** Sectors this sandbox wrote, by number: they shadow the file's. */
    this.written = new Map()
    this.onload = undefined
    this.onprogress = undefined
  }

  load() {
    this.onload?.({})
  }

  /** `length` bytes from `start`, as this sandbox sees them (its writes over the file's). */
  read(start, length) {
    const bytes = new Uint8Array(length)
    let done = 0
    while (done < length) {
      const read = readSync(this.fd, bytes, done, length - done, start + done)
      if (read === 0) break // past the file's end: zeros, as a disk of zeros would read
      done += read
    }
    if (this.written.size > 0) this.overlay(start, bytes)
    return bytes
  }

  /** Calls `fn` with `length` bytes from `start`. */
  get(start, length, fn) {
    fn(this.read(start, length))
  }

  /** v86 reads the first sector this way before a boot (for its asynchronous disks, to
   * have it in memory): a file disk reads it as it reads any. */
  get_and_cache(start, length, fn) {
    fn(this.read(start, length))
  }

  /** The bytes at `start`, returned (v86 reads the partition table this way). */
  get_from_cache(start, length) {
    return this.read(start, length)
  }

  /** Copies the sectors this sandbox wrote over `bytes`, read from `start`. */
  overlay(start, bytes) {
    const end = start + bytes.byteLength
    for (let sector = Math.floor(start / SECTOR); sector * SECTOR < end; sector++) {
      const data = this.written.get(sector)
      if (data === undefined) continue
      const from = Math.max(start, sector * SECTOR)
      const to = Math.min(end, (sector + 1) * SECTOR)
      bytes.set(data.subarray(from - sector * SECTOR, to - sector * SECTOR), from - start)
    }
  }

  /** Writes `slice` at `start` into this sandbox's copy of the sectors it touches. */
  set(start, slice, fn) {
    const end = start + slice.byteLength
    for (let sector = Math.floor(start / SECTOR); sector * SECTOR < end; sector++) {
      let data = this.written.get(sector)
      if (data === undefined) {
        // A partly written sector keeps the rest of its bytes.
        data = this.read(sector * SECTOR, SECTOR)
        this.written.set(sector, data)
      }
      const from = Math.max(start, sector * SECTOR)
      const to = Math.min(end, (sector + 1) * SECTOR)
      data.set(slice.subarray(from - start, to - start), from - sector * SECTOR)
    }
    fn()
  }

  /** The disk's size and the sectors written: [byteLength, (u32 sector, 512 bytes) per written sector]. */
  get_state() {
    const packed = new Uint8Array(this.written.size * (4 + SECTOR))
    const view = new DataView(packed.buffer)
    let at = 0
    for (const [sector, data] of this.written) {
      view.setUint32(at, sector, true)
      packed.set(data, at + 4)
      at += 4 + SECTOR
    }
    return [this.byteLength, packed]
  }

  /** Takes the written sectors of a saved state; throws if it was saved with another disk. */
  set_state(state) {
    const [byteLength, packed] = state
    if (byteLength !== this.byteLength || !(packed instanceof Uint8Array) || packed.byteLength % (4 + SECTOR) !== 0) {
      throw new Error(`the saved state's root disk (${byteLength} bytes) is not this machine's (${this.byteLength} bytes)`)
    }
    const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength)
    this.written = new Map()
    for (let at = 0; at < packed.byteLength; at += 4 + SECTOR) {
      this.written.set(view.getUint32(at, true), packed.slice(at + 4, at + 4 + SECTOR))
    }
  }

  close() {
    if (this.fd !== -1) closeSync(this.fd)
    this.fd = -1
  }
}
