/**
 * The 9P file server on its own (no VM): requests built as the Linux client sends them,
 * replies checked for what the guest would see. Confinement and read-only are the host's
 * job, so they are tested here at the protocol level as well as live (mounts.live.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { FileServer } from "../src/internal/fileServer.ts"
import { Errno, MessageReader, MessageType, MessageWriter, Rlerror } from "../src/internal/ninePWire.ts"

const O_RDONLY = 0
const O_WRONLY = 1
const O_TRUNC = 0o1000
const NOFID = 0xffffffff

let base: string
let shared: string
let server: FileServer
let nextTag = 1

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), "v86box-fileserver-"))
  shared = join(base, "shared")
  mkdirSync(join(shared, "sub"), { recursive: true })
  mkdirSync(join(base, "outside"))
  writeFileSync(join(base, "outside", "secret"), "host secret\n")
  writeFileSync(join(shared, "hello.txt"), "hello\n")
  symlinkSync(join(base, "outside"), join(shared, "absolute-link"))
  symlinkSync("../outside", join(shared, "relative-link"))
  server = await FileServer.make([
    { name: "rw", hostDirectory: shared, readOnly: false },
    { name: "ro", hostDirectory: shared, readOnly: true }
  ])
  await request(MessageType.Tversion, (message) => message.u32(65536).string("9P2000.L"))
})

afterAll(async () => {
  await server.close()
  rmSync(base, { recursive: true, force: true })
})

/** Sends one request; answers the reply's reader (positioned after its header). */
const request = async (type: number, fields: (message: MessageWriter) => MessageWriter) =>
  new MessageReader(await server.handle(fields(new MessageWriter(type, nextTag++)).finish()))

/** The errno of an Rlerror reply, or undefined when the request succeeded. */
const errnoOf = (reply: MessageReader) => (reply.type === Rlerror ? reply.u32() : undefined)

let nextFid = 1
const attach = async (exportName: string) => {
  const fid = nextFid++
  const reply = await request(MessageType.Tattach, (m) => m.u32(fid).u32(NOFID).string("root").string(exportName).u32(0))
  expect(errnoOf(reply)).toBeUndefined()
  return fid
}
const walk = async (from: number, names: ReadonlyArray<string>) => {
  const fid = nextFid++
  const reply = await request(MessageType.Twalk, (m) => {
    m.u32(from).u32(fid).u16(names.length)
    for (const name of names) m.string(name)
    return m
  })
  const errno = errnoOf(reply)
  return { fid, errno, walked: errno === undefined ? reply.u16() : 0 }
}
const open = async (fid: number, flags: number) => errnoOf(await request(MessageType.Tlopen, (m) => m.u32(fid).u32(flags)))
const read = async (fid: number) => {
  const reply = await request(MessageType.Tread, (m) => m.u32(fid).u64(0).u32(4096))
  return new TextDecoder().decode(reply.raw(reply.u32()))
}

describe("9P file server", () => {
  it("an unknown export is refused", async () => {
    const reply = await request(MessageType.Tattach, (m) => m.u32(999).u32(NOFID).string("root").string("nope").u32(0))
    expect(errnoOf(reply)).toBe(Errno.ENOENT)
  })

  it("the root of all shares lists the exports and cannot change", async () => {
    const root = await attach("")
    expect(await open(root, O_RDONLY)).toBeUndefined()
    const listing = await request(MessageType.Treaddir, (m) => m.u32(root).u64(0).u32(4096))
    const bytes = listing.raw(listing.u32())
    const names: Array<string> = []
    for (let at = 0; at < bytes.length;) {
      const length = bytes[at + 22]! | (bytes[at + 23]! << 8)
      names.push(new TextDecoder().decode(bytes.subarray(at + 24, at + 24 + length)))
      at += 24 + length
    }
    expect(names).toEqual([".", "..", "ro", "rw"])
    const mkdir = await request(MessageType.Tmkdir, (m) => m.u32(root).string("new").u32(0o755).u32(0))
    expect(errnoOf(mkdir)).toBe(Errno.EROFS)
    const { fid, walked } = await walk(await attach(""), ["rw", "hello.txt"])
    expect(walked).toBe(2)
    expect(await open(fid, O_RDONLY)).toBeUndefined()
    expect(await read(fid)).toBe("hello\n")
  })

  it("reads a shared file", async () => {
    const { fid, walked } = await walk(await attach("rw"), ["hello.txt"])
    expect(walked).toBe(1)
    expect(await open(fid, O_RDONLY)).toBeUndefined()
    expect(await read(fid)).toBe("hello\n")
  })

  it('".." at the root stays at the root', async () => {
    const root = await attach("rw")
    const { fid, walked } = await walk(root, ["..", "..", "hello.txt"])
    expect(walked).toBe(3)
    expect(await open(fid, O_RDONLY)).toBeUndefined()
    expect(await read(fid)).toBe("hello\n")
  })

  it("names with a slash, or empty, are refused", async () => {
    const root = await attach("rw")
    expect((await walk(root, ["../outside/secret"])).errno).toBe(Errno.EINVAL)
    expect((await walk(root, ["sub/../hello.txt"])).errno).toBe(Errno.EINVAL)
    expect((await walk(root, [""])).errno).toBe(Errno.EINVAL)
  })

  it("a walk never goes through a link on the host (absolute or relative)", async () => {
    const root = await attach("rw")
    for (const link of ["absolute-link", "relative-link"]) {
      // The walk stops at the link (the guest reads its target and resolves it itself).
      expect(await walk(root, [link, "secret"])).toMatchObject({ errno: undefined, walked: 1 })
      const atLink = await walk(root, [link])
      expect(await open(atLink.fid, O_RDONLY)).toBe(Errno.ELOOP)
    }
  })

  it("links made through the server must stay inside the shared directory", async () => {
    const root = await attach("rw")
    const makeLink = async (name: string, target: string) =>
      errnoOf(await request(MessageType.Tsymlink, (m) => m.u32(root).string(name).string(target).u32(0)))
    expect(await makeLink("to-etc", "/etc")).toBe(Errno.EPERM)
    expect(await makeLink("up", "../outside/secret")).toBe(Errno.EPERM)
    expect(await makeLink("deep-up", "sub/../../outside")).toBe(Errno.EPERM)
    expect(await makeLink("inside", "sub/../hello.txt")).toBeUndefined()
    expect(existsSync(join(shared, "to-etc"))).toBe(false)
  })

  it("device nodes and FIFOs cannot be made", async () => {
    const root = await attach("rw")
    const reply = await request(MessageType.Tmknod, (m) => m.u32(root).string("null").u32(0o20666).u32(1).u32(3).u32(0))
    expect(errnoOf(reply)).toBe(Errno.EPERM)
  })

  it("a read-only export refuses every change, whatever the open flags", async () => {
    const root = await attach("ro")
    const file = (await walk(root, ["hello.txt"])).fid
    expect(await open(file, O_WRONLY)).toBe(Errno.EROFS)
    expect(await open(file, O_RDONLY | O_TRUNC)).toBe(Errno.EROFS)
    const create = await request(MessageType.Tlcreate, (m) => m.u32(root).string("new").u32(O_WRONLY).u32(0o644).u32(0))
    expect(errnoOf(create)).toBe(Errno.EROFS)
    const unlink = await request(MessageType.Tunlinkat, (m) => m.u32(root).string("hello.txt").u32(0))
    expect(errnoOf(unlink)).toBe(Errno.EROFS)
    const truncate = await request(
      MessageType.Tsetattr,
      (m) => m.u32(file).u32(0x8).u32(0).u32(0).u32(0).u64(0).u64(0).u64(0).u64(0).u64(0)
    )
    expect(errnoOf(truncate)).toBe(Errno.EROFS)
    const mkdir = await request(MessageType.Tmkdir, (m) => m.u32(root).string("dir").u32(0o755).u32(0))
    expect(errnoOf(mkdir)).toBe(Errno.EROFS)
    expect(readFileSync(join(shared, "hello.txt"), "utf8")).toBe("hello\n")
    expect(existsSync(join(shared, "new"))).toBe(false)
  })

  it("a writable export takes new files, with set-id bits dropped", async () => {
    const root = await attach("rw")
    const directory = (await walk(root, ["sub"])).fid
    const create = await request(MessageType.Tlcreate, (m) => m.u32(directory).string("made").u32(O_WRONLY).u32(0o4755).u32(0))
    expect(errnoOf(create)).toBeUndefined()
    const write = await request(MessageType.Twrite, (m) => m.u32(directory).u64(0).u32(3).raw(new TextEncoder().encode("abc")))
    expect(write.u32()).toBe(3)
    expect(readFileSync(join(shared, "sub", "made"), "utf8")).toBe("abc")
    expect(statSync(join(shared, "sub", "made")).mode & 0o7777).toBe(0o755)
  })
})
