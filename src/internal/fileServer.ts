/**
 * A 9P2000.L file server over host directories, for the guest's virtio-9p device (v86's
 * `handle9p` hands each request here as bytes, src/internal/v86Machine.ts relays them).
 * Each export is a host directory the guest mounts by name (`aname`); the server keeps
 * the guest inside it (src/internal/confinedPath.ts: no "..", no path through a link, links
 * never followed on the host, no device nodes, no links created that point outside) and
 * refuses every change to a read-only export itself, whatever the guest's mount flags say.
 *
 * Requests are served one at a time, in arrival order: the guest cannot race one request
 * against another to swap a checked directory for a link.
 */
import type { BigIntStats } from "node:fs"
import { constants } from "node:fs"
import {
  chmod,
  type FileHandle,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  rename,
  rmdir,
  statfs,
  symlink,
  truncate,
  unlink
} from "node:fs/promises"
import { tmpdir } from "node:os"
import { checkName, ConfinedRoot } from "./confinedPath.ts"
import {
  errnoOf,
  errorReply,
  HEADER_BYTES,
  IO_HEADER_BYTES,
  MessageReader,
  MessageType,
  MessageWriter,
  NinePError,
  type Qid,
  QidType,
  tagOf
} from "./ninePWire.ts"

/** A host directory the guest may mount, by `name` (the 9P `aname`). */
export interface Export {
  readonly name: string
  readonly hostDirectory: string
  readonly readOnly: boolean
}

/** The largest message the server accepts or sends; the guest asks for its own (mount option msize). */
export const MAX_MESSAGE_BYTES = 512 * 1024

/** Linux open(2) flags as the guest sends them (i386 and every other Linux share these). */
const LinuxOpen = { accessMode: 0o3, readOnly: 0, truncate: 0o1000, append: 0o2000 } as const
const AT_REMOVEDIR = 0x200
/** Setattr's valid bits. */
const Set = { mode: 0x1, uid: 0x2, gid: 0x4, size: 0x8, atime: 0x10, mtime: 0x20, atimeGiven: 0x80, mtimeGiven: 0x100 } as const
/** Getattr's "basic" fields: everything but btime, gen and data_version. */
const STATS_BASIC = 0x7ffn
const V9FS_MAGIC = 0x01021997
const NO_ID = 0xffffffff
/** Modes the guest may set on host files: permissions and sticky, never set-user/group-id. */
const ALLOWED_MODE_BITS = 0o1777

interface Share {
  readonly export: Export
  readonly root: ConfinedRoot
}

interface DirectoryEntry {
  readonly qid: Qid
  readonly type: number
  readonly name: string
}

/** What a fid names: a path below a share's root (or the root of all shares), and what the guest opened there. */
interface Fid {
  /** Undefined at the root of all shares, a directory listing them by name. */
  readonly share: Share | undefined
  names: ReadonlyArray<string>
  readonly uid: number
  file: FileHandle | undefined
  /** A directory's entries, listed when the guest starts reading it (offset 0). */
  entries: ReadonlyArray<DirectoryEntry> | undefined
  opened: boolean
}

/** What a qid and getattr need of a file: Node's BigIntStats has it all. */
type FileStats = Pick<
  BigIntStats,
  "mode" | "uid" | "gid" | "nlink" | "rdev" | "size" | "blksize" | "blocks" | "ino" | "atimeNs" | "mtimeNs" | "ctimeNs" | "isDirectory" | "isSymbolicLink"
>

const qidOf = (stats: FileStats): Qid => ({
  type: stats.isDirectory() ? QidType.Directory : stats.isSymbolicLink() ? QidType.Symlink : QidType.File,
  version: 0,
  path: stats.ino
})

/** Linux's d_type of a file (DT_*), for directory entries. */
const directoryEntryType = (stats: BigIntStats): number =>
  stats.isDirectory() ? 4 : stats.isSymbolicLink() ? 10 : stats.isFIFO() ? 1 : stats.isCharacterDevice() ? 2 : stats.isBlockDevice() ? 6 : stats.isSocket() ? 12 : 8

/** The root of all shares: a read-only directory, as the guest's getattr sees it. */
const sharesRootStats: FileStats = {
  mode: 0o40555n,
  uid: 0n,
  gid: 0n,
  nlink: 2n,
  rdev: 0n,
  size: 0n,
  blksize: 4096n,
  blocks: 0n,
  ino: 0xfffffffffffffn,
  atimeNs: 0n,
  mtimeNs: 0n,
  ctimeNs: 0n,
  isDirectory: () => true,
  isSymbolicLink: () => false
}

const hostIsRoot = typeof process.getuid === "function" && process.getuid() === 0

export class FileServer {
  private readonly fids = new Map<number, Fid>()
  private messageBytes = 8192
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false

  private constructor(private readonly shares: ReadonlyMap<string, Share>) {}

  /** A server for these exports; each host directory must exist. */
  static async make(exports: ReadonlyArray<Export>): Promise<FileServer> {
    const shares = new Map<string, Share>()
    for (const entry of exports) shares.set(entry.name, { export: entry, root: await ConfinedRoot.open(entry.hostDirectory) })
    return new FileServer(shares)
  }

  /** Answers one request (its reply, or an Rlerror); requests are served in order, one at a time. */
  handle(request: Uint8Array): Promise<Uint8Array> {
    const reply = this.queue.then(() => this.serve(request))
    this.queue = reply
    return reply
  }

  /** Closes every file the guest left open; later requests fail with EIO. */
  close(): Promise<void> {
    this.closed = true
    const open = [...this.fids.values()]
    this.fids.clear()
    return Promise.all(open.map((fid) => fid.file?.close().catch(() => undefined))).then(() => undefined)
  }

  private async serve(request: Uint8Array): Promise<Uint8Array> {
    try {
      if (this.closed) throw new NinePError("EIO", "the file server is closed")
      return await this.dispatch(new MessageReader(request))
    } catch (error) {
      return errorReply(tagOf(request), errnoOf(error))
    }
  }

  private fid(id: number): Fid {
    const fid = this.fids.get(id)
    if (fid === undefined) throw new NinePError("EBADF", `unknown fid ${id}`)
    return fid
  }

  /** The share a fid is in; the root of all shares is fixed, so nothing but listing it is allowed there. */
  private shareOf(fid: Fid): Share {
    if (fid.share === undefined) throw new NinePError("EROFS", "the root of the shares cannot change")
    return fid.share
  }

  private writable(fid: Fid): void {
    const share = this.shareOf(fid)
    if (share.export.readOnly) throw new NinePError("EROFS", `${share.export.hostDirectory} is shared read-only`)
  }

  /** What a fid names, as host stats; the root of all shares is a read-only directory of its own. */
  private async statsOf(fid: Fid): Promise<FileStats> {
    return fid.share === undefined ? sharesRootStats : (await fid.share.root.inspect(fid.names)).stats
  }

  private async forget(id: number): Promise<void> {
    const fid = this.fids.get(id)
    this.fids.delete(id)
    await fid?.file?.close()
  }

  /** Files created for the guest belong to the guest's user when the host can arrange it (as root). */
  private async ownNew(path: string, fid: Fid, gid: number): Promise<void> {
    if (!hostIsRoot) return
    await lchown(path, fid.uid === NO_ID ? -1 : fid.uid, gid === NO_ID ? -1 : gid).catch(() => undefined)
  }

  private async dispatch(message: MessageReader): Promise<Uint8Array> {
    const reply = (type: number, capacity?: number) => new MessageWriter(type + 1, message.tag, capacity)
    switch (message.type) {
      case MessageType.Tversion: {
        const requested = message.u32()
        const version = message.string()
        for (const id of [...this.fids.keys()]) await this.forget(id)
        this.messageBytes = Math.min(requested, MAX_MESSAGE_BYTES)
        return reply(message.type).u32(this.messageBytes).string(version.startsWith("9P2000.L") ? "9P2000.L" : "unknown").finish()
      }
      case MessageType.Tattach: {
        const id = message.u32()
        message.u32() // afid: no authentication
        message.string() // uname
        const name = message.string()
        const uid = message.u32()
        // An empty name attaches the root of all shares: the guest mounts it once (one mount per
        // virtio-9p device) and binds each share where the user wants it.
        const share = name === "" ? undefined : this.shares.get(name)
        if (name !== "" && share === undefined) throw new NinePError("ENOENT", `no export named ${name}`)
        if (this.fids.has(id)) throw new NinePError("EBADF", `fid ${id} is in use`)
        const fid: Fid = { share, names: [], uid, file: undefined, entries: undefined, opened: false }
        const stats = await this.statsOf(fid)
        this.fids.set(id, fid)
        return reply(message.type).qid(qidOf(stats)).finish()
      }
      case MessageType.Twalk: {
        const fromId = message.u32()
        const from = this.fid(fromId)
        const newId = message.u32()
        const count = message.u16()
        const steps = Array.from({ length: count }, () => message.string())
        const qids: Array<Qid> = []
        let share = from.share
        let names = from.names
        for (const step of steps) {
          try {
            if (share === undefined) {
              // From the root of all shares, a name is a share (".." stays at the root).
              share = step === ".." ? undefined : this.shares.get(checkName(step))
              if (step !== ".." && share === undefined) throw new NinePError("ENOENT", `no export named ${step}`)
              qids.push(share === undefined ? qidOf(sharesRootStats) : qidOf((await share.root.inspect([])).stats))
              continue
            }
            const next = step === ".." ? names.slice(0, -1) : [...names, checkName(step)]
            const { stats } = await share.root.inspect(next)
            qids.push(qidOf(stats))
            names = next
          } catch (error) {
            // A walk that fails at its first name is an error; later, it answers the qids it got.
            if (qids.length === 0) throw error
            break
          }
        }
        if (qids.length === steps.length) {
          if (newId !== fromId && this.fids.has(newId)) throw new NinePError("EBADF", `fid ${newId} is in use`)
          this.fids.set(newId, { share, names, uid: from.uid, file: undefined, entries: undefined, opened: false })
        }
        const writer = reply(message.type).u16(qids.length)
        for (const qid of qids) writer.qid(qid)
        return writer.finish()
      }
      case MessageType.Tgetattr: {
        const fid = this.fid(message.u32())
        const stats = await this.statsOf(fid)
        return reply(message.type, 160)
          .u64(STATS_BASIC)
          .qid(qidOf(stats))
          .u32(Number(stats.mode))
          .u32(Number(stats.uid))
          .u32(Number(stats.gid))
          .u64(stats.nlink)
          .u64(stats.rdev)
          .u64(stats.size)
          .u64(stats.blksize)
          .u64(stats.blocks)
          .u64(stats.atimeNs / 1_000_000_000n)
          .u64(stats.atimeNs % 1_000_000_000n)
          .u64(stats.mtimeNs / 1_000_000_000n)
          .u64(stats.mtimeNs % 1_000_000_000n)
          .u64(stats.ctimeNs / 1_000_000_000n)
          .u64(stats.ctimeNs % 1_000_000_000n)
          .u64(0)
          .u64(0)
          .u64(0)
          .u64(0)
          .finish()
      }
      case MessageType.Tsetattr: {
        const fid = this.fid(message.u32())
        const valid = message.u32()
        const mode = message.u32()
        const uid = message.u32()
        const gid = message.u32()
        const size = message.u64()
        const atime = { seconds: message.u64(), nanoseconds: message.u64() }
        const mtime = { seconds: message.u64(), nanoseconds: message.u64() }
        if ((valid & (Set.mode | Set.uid | Set.gid | Set.size | Set.atime | Set.mtime)) !== 0) this.writable(fid)
        const { path, stats } = await this.shareOf(fid).root.inspect(fid.names)
        const link = stats.isSymbolicLink()
        if (valid & Set.mode) {
          if (link) throw new NinePError("EOPNOTSUPP", "a link has no mode of its own")
          await chmod(path, mode & ALLOWED_MODE_BITS)
        }
        if (valid & (Set.uid | Set.gid)) await lchown(path, valid & Set.uid ? uid : -1, valid & Set.gid ? gid : -1)
        if (valid & Set.size) {
          if (!stats.isFile()) throw new NinePError(stats.isDirectory() ? "EISDIR" : "EINVAL")
          await (fid.file === undefined ? truncate(path, Number(size)) : fid.file.truncate(Number(size)))
        }
        if (valid & (Set.atime | Set.mtime)) {
          const now = Date.now() / 1000
          const seconds = (time: { seconds: bigint; nanoseconds: bigint }) => Number(time.seconds) + Number(time.nanoseconds) / 1e9
          const accessed = valid & Set.atime ? (valid & Set.atimeGiven ? seconds(atime) : now) : Number(stats.atimeNs) / 1e9
          const modified = valid & Set.mtime ? (valid & Set.mtimeGiven ? seconds(mtime) : now) : Number(stats.mtimeNs) / 1e9
          await lutimes(path, accessed, modified)
        }
        return reply(message.type).finish()
      }
      case MessageType.Tlopen: {
        const fid = this.fid(message.u32())
        const flags = message.u32()
        if (fid.opened) throw new NinePError("EBADF", "fid already open")
        const writes = (flags & LinuxOpen.accessMode) !== LinuxOpen.readOnly || (flags & LinuxOpen.truncate) !== 0
        if (fid.share === undefined) {
          if (writes) throw new NinePError("EISDIR")
          fid.opened = true
          return reply(message.type).qid(qidOf(sharesRootStats)).u32(0).finish()
        }
        const { path, stats } = await fid.share.root.inspect(fid.names)
        if (stats.isDirectory()) {
          if (writes) throw new NinePError("EISDIR")
        } else if (stats.isFile()) {
          if (writes) this.writable(fid)
          fid.file = await open(path, hostOpenFlags(flags))
        } else {
          // Links are resolved by the guest; opening a FIFO or a device would reach past the directory.
          throw new NinePError(stats.isSymbolicLink() ? "ELOOP" : "EPERM", `${path} is not a regular file or directory`)
        }
        fid.opened = true
        return reply(message.type).qid(qidOf(stats)).u32(0).finish()
      }
      case MessageType.Tlcreate: {
        const fid = this.fid(message.u32())
        const name = checkName(message.string())
        const flags = message.u32()
        const mode = message.u32()
        const gid = message.u32()
        this.writable(fid)
        const directory = await this.shareOf(fid).root.inspect(fid.names)
        if (!directory.stats.isDirectory()) throw new NinePError("ENOTDIR")
        const names = [...fid.names, name]
        const path = await this.shareOf(fid).root.resolve(names)
        const file = await open(path, hostOpenFlags(flags) | constants.O_CREAT | constants.O_EXCL, mode & ALLOWED_MODE_BITS)
        await this.ownNew(path, fid, gid)
        fid.names = names
        fid.file = file
        fid.opened = true
        return reply(message.type).qid(qidOf(await lstat(path, { bigint: true }))).u32(0).finish()
      }
      case MessageType.Tread: {
        const fid = this.fid(message.u32())
        const offset = message.u64()
        const count = Math.min(message.u32(), this.messageBytes - IO_HEADER_BYTES)
        if (fid.file === undefined) throw new NinePError(fid.opened ? "EISDIR" : "EBADF")
        // Read straight into the reply: Rread is size[4] type[1] tag[2] count[4] data.
        const reply = new Uint8Array(HEADER_BYTES + 4 + count)
        const { bytesRead } = await fid.file.read(reply, HEADER_BYTES + 4, count, Number(offset))
        const view = new DataView(reply.buffer)
        view.setUint32(0, HEADER_BYTES + 4 + bytesRead, true)
        view.setUint8(4, MessageType.Tread + 1)
        view.setUint16(5, message.tag, true)
        view.setUint32(HEADER_BYTES, bytesRead, true)
        return reply.subarray(0, HEADER_BYTES + 4 + bytesRead)
      }
      case MessageType.Twrite: {
        const fid = this.fid(message.u32())
        const offset = message.u64()
        const data = message.raw(message.u32())
        this.writable(fid)
        if (fid.file === undefined) throw new NinePError(fid.opened ? "EISDIR" : "EBADF")
        const { bytesWritten } = await fid.file.write(data, 0, data.length, Number(offset))
        return reply(message.type).u32(bytesWritten).finish()
      }
      case MessageType.Treaddir: {
        const fid = this.fid(message.u32())
        const offset = Number(message.u64())
        const count = Math.min(message.u32(), this.messageBytes - IO_HEADER_BYTES)
        if (!fid.opened || fid.file !== undefined) throw new NinePError("ENOTDIR")
        if (offset === 0 || fid.entries === undefined) fid.entries = await this.listDirectory(fid)
        const body = new MessageWriter(0, 0, count + HEADER_BYTES)
        for (let index = offset; index < fid.entries.length; index++) {
          const entry = fid.entries[index]!
          const before = body.length
          body.qid(entry.qid).u64(index + 1).u8(entry.type).string(entry.name)
          if (body.length - HEADER_BYTES > count) {
            body.truncate(before)
            break
          }
        }
        const entries = body.finish().subarray(HEADER_BYTES)
        return reply(message.type, entries.length + 16).u32(entries.length).raw(entries).finish()
      }
      case MessageType.Tstatfs: {
        const fid = this.fid(message.u32())
        const info = await statfs(fid.share?.root.root ?? tmpdir(), { bigint: true })
        return reply(message.type)
          .u32(V9FS_MAGIC)
          .u32(Number(info.bsize))
          .u64(info.blocks)
          .u64(info.bfree)
          .u64(info.bavail)
          .u64(info.files)
          .u64(info.ffree)
          .u64(0)
          .u32(255)
          .finish()
      }
      case MessageType.Tmkdir: {
        const fid = this.fid(message.u32())
        const name = checkName(message.string())
        const mode = message.u32()
        const gid = message.u32()
        this.writable(fid)
        const path = await this.childPath(fid, name)
        await mkdir(path, mode & ALLOWED_MODE_BITS)
        await this.ownNew(path, fid, gid)
        return reply(message.type).qid(qidOf(await lstat(path, { bigint: true }))).finish()
      }
      case MessageType.Tsymlink: {
        const fid = this.fid(message.u32())
        const name = checkName(message.string())
        const target = message.string()
        const gid = message.u32()
        this.writable(fid)
        // Harmless to the guest (it resolves links itself), but a host program could follow it out.
        if (!ConfinedRoot.linkStaysInside(fid.names, target)) {
          throw new NinePError("EPERM", `a link to ${target} would point outside the shared directory`)
        }
        const path = await this.childPath(fid, name)
        await symlink(target, path)
        await this.ownNew(path, fid, gid)
        return reply(message.type).qid(qidOf(await lstat(path, { bigint: true }))).finish()
      }
      case MessageType.Tmknod:
        throw new NinePError("EPERM", "device nodes and FIFOs cannot be made in a shared directory")
      case MessageType.Treadlink: {
        const fid = this.fid(message.u32())
        const { path, stats } = await this.shareOf(fid).root.inspect(fid.names)
        if (!stats.isSymbolicLink()) throw new NinePError("EINVAL")
        return reply(message.type).string(await readlink(path)).finish()
      }
      case MessageType.Tlink: {
        const directory = this.fid(message.u32())
        const source = this.fid(message.u32())
        const name = checkName(message.string())
        if (directory.share !== source.share) throw new NinePError("EXDEV")
        this.writable(directory)
        const from = await this.shareOf(source).root.inspect(source.names)
        if (from.stats.isDirectory()) throw new NinePError("EPERM")
        await link(from.path, await this.childPath(directory, name))
        return reply(message.type).finish()
      }
      case MessageType.Trename: {
        const fid = this.fid(message.u32())
        const directory = this.fid(message.u32())
        const name = checkName(message.string())
        await this.rename(this.shareOf(fid), fid.names, directory, name)
        return reply(message.type).finish()
      }
      case MessageType.Trenameat: {
        const fromDirectory = this.fid(message.u32())
        const fromName = checkName(message.string())
        const toDirectory = this.fid(message.u32())
        const toName = checkName(message.string())
        await this.rename(this.shareOf(fromDirectory), [...fromDirectory.names, fromName], toDirectory, toName)
        return reply(message.type).finish()
      }
      case MessageType.Tunlinkat: {
        const directory = this.fid(message.u32())
        const name = checkName(message.string())
        const flags = message.u32()
        this.writable(directory)
        const { path, stats } = await this.shareOf(directory).root.inspect([...directory.names, name])
        if (flags & AT_REMOVEDIR) await rmdir(path)
        else if (stats.isDirectory()) throw new NinePError("EISDIR")
        else await unlink(path)
        return reply(message.type).finish()
      }
      case MessageType.Tremove: {
        const id = message.u32()
        const fid = this.fid(id)
        await this.forget(id)
        this.writable(fid)
        const { path, stats } = await this.shareOf(fid).root.inspect(fid.names)
        await (stats.isDirectory() ? rmdir(path) : unlink(path))
        return reply(message.type).finish()
      }
      case MessageType.Tfsync: {
        const fid = this.fid(message.u32())
        await fid.file?.sync()
        return reply(message.type).finish()
      }
      case MessageType.Tlock: {
        this.fid(message.u32())
        // Locks are advisory and the guest is the directory's only client: every lock is granted.
        return reply(message.type).u8(0).finish()
      }
      case MessageType.Tgetlock: {
        this.fid(message.u32())
        message.u8()
        const start = message.u64()
        const length = message.u64()
        const processId = message.u32()
        const client = message.string()
        const F_UNLCK = 2
        return reply(message.type).u8(F_UNLCK).u64(start).u64(length).u32(processId).string(client).finish()
      }
      case MessageType.Tclunk: {
        const id = message.u32()
        this.fid(id)
        await this.forget(id)
        return reply(message.type).finish()
      }
      case MessageType.Tflush:
        // Requests are answered in order, so the one to flush has been answered already.
        return reply(message.type).finish()
      default:
        // Tauth, Txattrwalk, Txattrcreate and anything newer: the Linux client copes without them.
        throw new NinePError("EOPNOTSUPP", `9P message type ${message.type} is not supported`)
    }
  }

  /** The host path of `name` in the directory `fid`, which must be a directory. */
  private async childPath(fid: Fid, name: string): Promise<string> {
    const directory = await this.shareOf(fid).root.inspect(fid.names)
    if (!directory.stats.isDirectory()) throw new NinePError("ENOTDIR")
    return this.shareOf(fid).root.resolve([...fid.names, name])
  }

  private async rename(share: Share, from: ReadonlyArray<string>, toDirectory: Fid, toName: string): Promise<void> {
    if (toDirectory.share !== share) throw new NinePError("EXDEV")
    this.writable(toDirectory)
    const source = await share.root.inspect(from)
    const to = [...toDirectory.names, toName]
    await rename(source.path, await this.childPath(toDirectory, toName))
    // Fids name paths: those at or below the old name now live at the new one.
    for (const fid of this.fids.values()) {
      if (fid.share === share && from.every((name, index) => fid.names[index] === name)) {
        fid.names = [...to, ...fid.names.slice(from.length)]
      }
    }
  }

  private async listDirectory(fid: Fid): Promise<ReadonlyArray<DirectoryEntry>> {
    if (fid.share === undefined) {
      const root = { qid: qidOf(sharesRootStats), type: 4 }
      const entries: Array<DirectoryEntry> = [{ ...root, name: "." }, { ...root, name: ".." }]
      for (const [name, share] of [...this.shares].sort(([a], [b]) => (a < b ? -1 : 1))) {
        entries.push({ qid: qidOf((await share.root.inspect([])).stats), type: 4, name })
      }
      return entries
    }
    const { path, stats } = await fid.share.root.inspect(fid.names)
    const parent = await this.shareOf(fid).root.inspect(fid.names.slice(0, -1))
    const entries: Array<DirectoryEntry> = [
      { qid: qidOf(stats), type: 4, name: "." },
      { qid: qidOf(parent.stats), type: 4, name: ".." }
    ]
    for (const name of (await readdir(path)).sort()) {
      // A file may vanish between the listing and its lstat: leave it out.
      const entry = await lstat(`${path}/${name}`, { bigint: true }).catch(() => undefined)
      if (entry !== undefined) entries.push({ qid: qidOf(entry), type: directoryEntryType(entry), name })
    }
    return entries
  }
}

/** The host's open flags for a guest's Tlopen: access mode, truncate and append; never following a link. */
const hostOpenFlags = (linuxFlags: number): number => {
  const accessMode = linuxFlags & LinuxOpen.accessMode
  return (accessMode === 1 ? constants.O_WRONLY : accessMode === 2 ? constants.O_RDWR : constants.O_RDONLY) |
    (linuxFlags & LinuxOpen.truncate ? constants.O_TRUNC : 0) |
    (linuxFlags & LinuxOpen.append ? constants.O_APPEND : 0) |
    constants.O_NOFOLLOW
}
