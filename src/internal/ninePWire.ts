/**
 * The 9P2000.L wire format, as the Linux 9p client speaks it over virtio: message types,
 * a reader for requests and a writer for replies. Everything is little-endian; strings
 * are a 16-bit length and UTF-8 bytes. Only the codec lives here; what the messages do
 * is src/internal/fileServer.ts.
 */

/** Message types (T = request, its R reply is type + 1). */
export const MessageType = {
  Tlerror: 6,
  Tstatfs: 8,
  Tlopen: 12,
  Tlcreate: 14,
  Tsymlink: 16,
  Tmknod: 18,
  Trename: 20,
  Treadlink: 22,
  Tgetattr: 24,
  Tsetattr: 26,
  Txattrwalk: 30,
  Txattrcreate: 32,
  Treaddir: 40,
  Tfsync: 50,
  Tlock: 52,
  Tgetlock: 54,
  Tlink: 70,
  Tmkdir: 72,
  Trenameat: 74,
  Tunlinkat: 76,
  Tversion: 100,
  Tauth: 102,
  Tattach: 104,
  Tflush: 108,
  Twalk: 110,
  Tread: 116,
  Twrite: 118,
  Tclunk: 120,
  Tremove: 122
} as const

/** Rlerror: the reply to any request that failed, carrying a Linux errno. */
export const Rlerror = 7

/** The Linux errno numbers a reply may carry (the guest is Linux; the host may not be). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  EMLINK: 31,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  EOPNOTSUPP: 95,
  EDQUOT: 122
} as const

export type ErrnoName = keyof typeof Errno

/** A failed request: becomes an Rlerror with this errno. */
export class NinePError extends Error {
  constructor(readonly errno: ErrnoName, message?: string) {
    super(message ?? errno)
  }
}

/** Qid types: what kind of file a qid names. */
export const QidType = { File: 0x00, Symlink: 0x02, Directory: 0x80 } as const

export interface Qid {
  readonly type: number
  readonly version: number
  readonly path: bigint
}

/** Size of a message header: size[4] type[1] tag[2]. */
export const HEADER_BYTES = 7
/** Bytes of an Rread/Twrite besides its data: header, count[4] (and fid[4] offset[8] for Twrite). */
export const IO_HEADER_BYTES = 24
/** The tag of Tversion, which has no tag of its own. */
export const NOTAG = 0xffff

const utf8Decoder = new TextDecoder("utf-8", { fatal: false })
const utf8Encoder = new TextEncoder()

/** Reads the fields of one request, in order. Running past its end throws EINVAL. */
export class MessageReader {
  private offset = HEADER_BYTES
  private readonly view: DataView

  readonly type: number
  readonly tag: number

  constructor(private readonly bytes: Uint8Array) {
    if (bytes.length < HEADER_BYTES) throw new NinePError("EINVAL", "a 9P message shorter than its header")
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.type = this.view.getUint8(4)
    this.tag = this.view.getUint16(5, true)
  }

  private take(length: number): number {
    const at = this.offset
    if (at + length > this.bytes.length) throw new NinePError("EINVAL", "a 9P message ended early")
    this.offset += length
    return at
  }

  u8(): number {
    return this.view.getUint8(this.take(1))
  }

  u16(): number {
    return this.view.getUint16(this.take(2), true)
  }

  u32(): number {
    return this.view.getUint32(this.take(4), true)
  }

  u64(): bigint {
    return this.view.getBigUint64(this.take(8), true)
  }

  /** A string field; names the guest sends are bytes, decoded as UTF-8 (as Node paths are). */
  string(): string {
    const length = this.u16()
    return utf8Decoder.decode(this.raw(length))
  }

  /** `length` bytes, as a view (not a copy). */
  raw(length: number): Uint8Array {
    const at = this.take(length)
    return this.bytes.subarray(at, at + length)
  }
}

/** Builds one reply: fields appended in order, the size written when it is finished. */
export class MessageWriter {
  private bytes: Uint8Array
  private view: DataView
  private offset = HEADER_BYTES

  constructor(type: number, tag: number, capacity = 256) {
    this.bytes = new Uint8Array(Math.max(capacity, HEADER_BYTES))
    this.view = new DataView(this.bytes.buffer)
    this.view.setUint8(4, type)
    this.view.setUint16(5, tag, true)
  }

  /** Bytes written so far, header included. */
  get length(): number {
    return this.offset
  }

  private reserve(length: number): number {
    if (this.offset + length > this.bytes.length) {
      const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.offset + length))
      grown.set(this.bytes)
      this.bytes = grown
      this.view = new DataView(grown.buffer)
    }
    const at = this.offset
    this.offset += length
    return at
  }

  /** Drops what was written after the first `length` bytes. */
  truncate(length: number): void {
    this.offset = Math.max(HEADER_BYTES, Math.min(length, this.offset))
  }

  u8(value: number): this {
    this.view.setUint8(this.reserve(1), value)
    return this
  }

  u16(value: number): this {
    this.view.setUint16(this.reserve(2), value, true)
    return this
  }

  u32(value: number): this {
    this.view.setUint32(this.reserve(4), value >>> 0, true)
    return this
  }

  u64(value: bigint | number): this {
    this.view.setBigUint64(this.reserve(8), BigInt.asUintN(64, BigInt(value)), true)
    return this
  }

  string(text: string): this {
    const encoded = utf8Encoder.encode(text)
    this.u16(encoded.length)
    this.raw(encoded)
    return this
  }

  raw(data: Uint8Array): this {
    this.bytes.set(data, this.reserve(data.length))
    return this
  }

  qid(qid: Qid): this {
    return this.u8(qid.type).u32(qid.version).u64(qid.path)
  }

  /** The finished message (its size field set). */
  finish(): Uint8Array {
    this.view.setUint32(0, this.offset, true)
    return this.bytes.subarray(0, this.offset)
  }
}

/** The Rlerror reply to the request with `tag`. */
export const errorReply = (tag: number, errno: ErrnoName): Uint8Array => new MessageWriter(Rlerror, tag, 16).u32(Errno[errno]).finish()

/** The tag of a request, or NOTAG when it is too short to have one. */
export const tagOf = (request: Uint8Array): number =>
  request.length >= HEADER_BYTES ? request[5]! | (request[6]! << 8) : NOTAG

/** The errno a Node fs error stands for (EIO when it has no code this table knows). */
export const errnoOf = (error: unknown): ErrnoName => {
  if (error instanceof NinePError) return error.errno
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === "string" && code in Errno ? (code as ErrnoName) : code === "ENOTSUP" ? "EOPNOTSUPP" : "EIO"
}
