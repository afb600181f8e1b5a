/**
 * The root disk read from a file (src/internal/fileDisk.mjs): the guest sees the file's
 * bytes, its writes land in its own sectors and never in the file nor in another
 * sandbox's disk, and a saved state carries them to the machine that resumes it.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { FileDisk } from "../src/internal/fileDisk.mjs"

const dir = mkdtempSync(join(tmpdir(), "v86box-filedisk-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const SIZE = 64 * 1024
const original = new Uint8Array(randomBytes(SIZE))
const path = join(dir, "disk.img")
writeFileSync(path, original)

const read = (disk: FileDisk, start: number, length: number): Uint8Array => {
  let result: Uint8Array | undefined
  disk.get(start, length, (bytes: Uint8Array) => (result = bytes.slice()))
  return result!
}
const write = (disk: FileDisk, start: number, bytes: Uint8Array) => {
  let done = false
  disk.set(start, bytes, () => (done = true))
  expect(done).toBe(true)
}

describe("FileDisk", () => {
  it("reads the file's bytes at any offset", () => {
    const disk = new FileDisk(path, SIZE)
    expect(read(disk, 0, SIZE)).toEqual(original)
    expect(read(disk, 1000, 3000)).toEqual(original.subarray(1000, 4000))
    disk.close()
  })

  it("answers v86's other reads (given as the disk itself): the first sector before a boot, the partition table", () => {
    const disk = new FileDisk(path, SIZE)
    write(disk, 0, Uint8Array.of(0x55, 0xaa))
    const expected = Uint8Array.of(0x55, 0xaa, ...original.subarray(2, 512))
    expect(disk.get_from_cache(0, 512)).toEqual(expected)
    let cached: Uint8Array | undefined
    disk.get_and_cache(0, 512, (bytes: Uint8Array) => (cached = bytes))
    expect(cached).toEqual(expected)
    let loaded = false
    disk.onload = () => (loaded = true)
    disk.load()
    expect(loaded).toBe(true)
    disk.close()
  })

  it("keeps writes in this disk: the file and another disk on it are unchanged", () => {
    const disk = new FileDisk(path, SIZE)
    const other = new FileDisk(path, SIZE)
    const data = new Uint8Array(1024).fill(0xab)
    write(disk, 2048, data)
    expect(read(disk, 2048, 1024)).toEqual(data)
    // A read across written and unwritten sectors sees both.
    const around = read(disk, 1536, 2048)
    expect(around.subarray(0, 512)).toEqual(original.subarray(1536, 2048))
    expect(around.subarray(512, 1536)).toEqual(data)
    expect(around.subarray(1536)).toEqual(original.subarray(3072, 3584))
    expect(read(other, 2048, 1024)).toEqual(original.subarray(2048, 3072))
    expect(new Uint8Array(readFileSync(path))).toEqual(original)
    disk.close()
    other.close()
  })

  it("a write to part of a sector keeps the rest of it", () => {
    const disk = new FileDisk(path, SIZE)
    write(disk, 4100, Uint8Array.of(1, 2, 3))
    const sector = read(disk, 4096, 512)
    expect([...sector.subarray(4, 7)]).toEqual([1, 2, 3])
    expect(sector.subarray(0, 4)).toEqual(original.subarray(4096, 4100))
    expect(sector.subarray(7)).toEqual(original.subarray(4103, 4608))
    disk.close()
  })

  it("a saved state carries the written sectors to the disk that resumes it", () => {
    const disk = new FileDisk(path, SIZE)
    write(disk, 512, new Uint8Array(512).fill(7))
    write(disk, 60_000, Uint8Array.of(9, 9))
    const state = disk.get_state()
    const resumed = new FileDisk(path, SIZE)
    resumed.set_state(state)
    expect(read(resumed, 0, SIZE)).toEqual(read(disk, 0, SIZE))
    // A clean state (nothing written) takes back what an earlier guest wrote.
    resumed.set_state(new FileDisk(path, SIZE).get_state())
    expect(read(resumed, 0, SIZE)).toEqual(original)
    disk.close()
    resumed.close()
  })

  it("refuses a state saved with another disk, a short file and a missing one", () => {
    const disk = new FileDisk(path, SIZE)
    expect(() => disk.set_state([SIZE * 2, new Uint8Array(0)])).toThrow(/not this machine's/)
    // The whole disk, as states of versions that kept it in the state did.
    expect(() => disk.set_state([SIZE, new Uint8Array(SIZE)])).toThrow(/not this machine's/)
    disk.close()
    expect(() => new FileDisk(path, SIZE + 512)).toThrow(/has 65536 bytes, 66048 expected/)
    expect(() => new FileDisk(join(dir, "missing.img"), SIZE)).toThrow(/ENOENT/)
  })
})
