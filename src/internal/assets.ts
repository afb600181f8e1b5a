import type { PlatformError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import { existsSync } from "node:fs"
import { open } from "node:fs/promises"
import { createRequire } from "node:module"
import { homedir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { brotliDecompress } from "node:zlib"
import type * as Assets from "../Assets.ts"
import { AssetError } from "../Errors.ts"
import * as CacheFiles from "./cacheFiles.ts"

/**
 * The package root is the nearest dir above this module with a `package.json`: that
 * holds for `src/internal/` in the repo and for `dist/src/internal/` in the package.
 */
const packageRoot = (moduleDir: string): string => {
  for (let dir = moduleDir; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir
    if (dirname(dir) === dir) return join(moduleDir, "..", "..")
  }
}

export const bundledAssetsDir: string = join(packageRoot(dirname(fileURLToPath(import.meta.url))), "assets")

/** The fixed order of the assets: resolution, fingerprints and error messages use it. */
const assetNames: ReadonlyArray<Assets.AssetName> = ["kernel", "initrd", "rootfs", "bios", "vgaBios", "wasm"]

const sha256Pattern = /^[0-9a-fA-F]{64}$/

// ---------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------

const Sha256 = Schema.String.pipe(
  Schema.pattern(sha256Pattern, { message: () => "expected a sha256: 64 hex characters" })
)

const ManifestSource = Schema.Struct({ package: Schema.String, version: Schema.String })

const ManifestFile = Schema.Struct({
  path: Schema.NonEmptyString,
  size: Schema.NonNegativeInt,
  sha256: Sha256,
  sources: Schema.Array(ManifestSource),
  /** Set when the file is brotli-compressed: what it unpacks to (the root disk is). */
  unpacked: Schema.optional(Schema.Struct({ size: Schema.NonNegativeInt, sha256: Sha256 }))
})

/** A Debian binary package in the image (descriptive: only `package` and `version` are required). */
const ManifestPackage = Schema.Struct({
  package: Schema.String,
  version: Schema.String,
  arch: Schema.optional(Schema.String),
  debSha256: Schema.optional(Schema.String),
  source: Schema.optional(Schema.String),
  sourceVersion: Schema.optional(Schema.String)
})

export const Manifest = Schema.Struct({
  format: Schema.Literal(1),
  v86: Schema.String,
  agentProtocol: Schema.Int,
  memoryMB: Schema.Int.pipe(Schema.positive()),
  cmdline: Schema.String,
  files: Schema.Struct(
    {
      kernel: ManifestFile,
      initrd: Schema.optional(ManifestFile),
      rootfs: Schema.optional(ManifestFile),
      bios: ManifestFile,
      vgaBios: ManifestFile
    },
    Schema.Record({ key: Schema.String, value: ManifestFile })
  ),
  packages: Schema.Array(ManifestPackage),
  reproducible: Schema.Boolean,
  notReproducible: Schema.Array(Schema.Unknown)
})

export const AssetSource = Schema.Union(
  Schema.NonEmptyString,
  Schema.Struct({ url: Schema.NonEmptyString, sha256: Sha256 })
)

export const AssetSources = Schema.Struct({
  kernel: Schema.optional(AssetSource),
  initrd: Schema.optional(AssetSource),
  rootfs: Schema.optional(AssetSource),
  bios: Schema.optional(AssetSource),
  vgaBios: Schema.optional(AssetSource),
  wasm: Schema.optional(AssetSource)
})

const decodeManifestJson = Schema.decodeUnknown(Schema.parseJson(Manifest), { errors: "all" })

// ---------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------

const sha256Hex = (data: Uint8Array | string): string => createHash("sha256").update(data).digest("hex")

/**
 * sha256 of files already hashed in this process, keyed by path, size and mtime.
 * Hashing the root disk (~40 MB) costs ~110 ms on a 2-core machine without SHA
 * extensions: every `resolve` after the first pays only for a stat.
 */
const hashedFiles = new Map<string, string>()

/**
 * The last bytes read from each path, with the stat key they were read under: a
 * sandbox taking the standby resolves its assets again, and re-reading the ~4 MB of
 * kernel, BIOS and wasm cost ~15 ms of its ~120 ms budget.
 */
const readFiles = new Map<string, { readonly key: string; readonly file: LoadedFile }>()

/** The OS reason of a file system error, e.g. `ENOENT: no such file or directory, open '/x'`. */
const platformReason = (error: PlatformError): string =>
  error._tag === "SystemError" ? (error.description ?? error.reason) : error.message

interface LoadedFile {
  readonly bytes: Uint8Array
  readonly sha256: string
}

/**
 * A file's size and the key the memos above use (path, size and mtime); anything but a
 * regular file is an AssetError.
 */
const statForMemo = (asset: string, filePath: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const info = yield* fs.stat(filePath)
    if (info.type !== "File") {
      return yield* new AssetError({ asset, reason: `"${filePath}" is not a file (it is a ${info.type})` })
    }
    return { size: info.size, key: Option.map(info.mtime, (mtime) => `${filePath}\u0000${info.size}\u0000${mtime.getTime()}`) }
  })

/** Reads a file and its sha256; a missing or unreadable file is an AssetError naming the path and the OS reason. */
const readHashed = (asset: string, filePath: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const { size, key } = yield* statForMemo(asset, filePath)
    const known = readFiles.get(filePath)
    if (known !== undefined && Option.isSome(key) && known.key === key.value) return known.file
    const bytes = yield* fs.readFile(filePath)
    // Bytes of another size than stat saw mean the file changed in between: the stat
    // key does not describe them, so neither use nor store a memo then.
    const keyDescribesBytes = BigInt(bytes.length) === size
    const memoized = Option.flatMapNullable(key, (k) => hashedFiles.get(k))
    const file: LoadedFile = { bytes, sha256: Option.isSome(memoized) && keyDescribesBytes ? memoized.value : sha256Hex(bytes) }
    if (Option.isSome(key) && keyDescribesBytes) {
      hashedFiles.set(key.value, file.sha256)
      readFiles.set(filePath, { key: key.value, file })
    }
    return file
  }).pipe(
    Effect.catchTag(
      "SystemError",
      "BadArgument",
      (error) => new AssetError({ asset, reason: `cannot read "${filePath}": ${platformReason(error)}` })
    )
  )

// ---------------------------------------------------------------------------
// The bundled image
// ---------------------------------------------------------------------------

/** The last manifest decoded from each path, with the text it was decoded from. */
const decodedManifests = new Map<string, { readonly text: string; readonly manifest: typeof Manifest.Type }>()

export const readManifest = (dir: string = bundledAssetsDir) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const manifestPath = path.join(dir, "manifest.json")
    const readError = (error: PlatformError) =>
      new AssetError({
        asset: "manifest",
        reason: `cannot read the image manifest "${manifestPath}": ${platformReason(error)}`
      })
    // Decoding it costs ~8 ms, paid by every sandbox (the standby's included) otherwise.
    const text = yield* fs.readFileString(manifestPath).pipe(Effect.mapError(readError))
    const known = decodedManifests.get(manifestPath)
    if (known !== undefined && known.text === text) return known.manifest
    return yield* decodeManifestJson(text).pipe(
      Effect.tap((manifest) => decodedManifests.set(manifestPath, { text, manifest })),
      Effect.mapError((error) =>
        new AssetError({
          asset: "manifest",
          reason: `"${manifestPath}" is not a valid v86box image manifest:\n${
            ParseResult.TreeFormatter.formatErrorSync(error)
          }`
        })
      )
    )
  })

type ManifestFileEntry = typeof ManifestFile.Type

/** Reads one bundled file and checks it against its manifest entry: size first, then sha256. */
const loadBundled = (asset: string, dir: string, entry: ManifestFileEntry) =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    const filePath = path.join(dir, entry.path)
    const loaded = yield* readHashed(asset, filePath)
    if (loaded.bytes.length !== entry.size) {
      return yield* new AssetError({
        asset,
        reason: `bundled file "${filePath}" has the wrong size (truncated or replaced?): ` +
          `expected ${entry.size} bytes, found ${loaded.bytes.length}`
      })
    }
    if (loaded.sha256 !== entry.sha256.toLowerCase()) {
      return yield* new AssetError({
        asset,
        reason: `bundled file "${filePath}" is corrupt: expected sha256 ${entry.sha256}, got ${loaded.sha256}`
      })
    }
    return loaded
  })

export const verifyBundled = (dir: string = bundledAssetsDir) =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    const manifest = yield* readManifest(dir)
    const verified: Array<Assets.VerifiedFile> = []
    for (const [asset, entry] of Object.entries(manifest.files)) {
      if (entry === undefined) continue
      yield* loadBundled(asset, dir, entry)
      verified.push({ asset, path: path.join(dir, entry.path), size: entry.size, sha256: entry.sha256.toLowerCase() })
    }
    return verified
  })

/** The wasm that ships with the installed `v86` package. */
const loadDefaultWasm = Effect.gen(function*() {
  const path = yield* Path.Path
  const packageJson = yield* Effect.try({
    try: () => createRequire(import.meta.url).resolve("v86/package.json"),
    catch: (error) =>
      new AssetError({ asset: "wasm", reason: `cannot find the v86 package to take v86.wasm from: ${String(error)}` })
  })
  return yield* readHashed("wasm", path.join(path.dirname(packageJson), "build", "v86.wasm"))
})

// ---------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------

const contentLength = (header: string | undefined): number | undefined => {
  if (header === undefined || !/^\d+$/.test(header)) return undefined
  return Number(header)
}

/** The HttpClient's own message hides the OS reason (e.g. ECONNREFUSED) in `cause`. */
const describeHttpError = (
  error: { readonly reason: string; readonly description?: string | undefined; readonly cause?: unknown }
): string => {
  const detail = error.description ?? (error.cause instanceof Error ? error.cause.message : undefined)
  return detail === undefined ? `${error.reason} error` : `${error.reason} error: ${detail}`
}

/**
 * Streams `url` into a temp file next to `cachePath`, hashing as it goes, and renames it
 * into place only when the hash matches. The temp file is removed on every other exit,
 * interruption included, so the cache never holds a partial or unverified file.
 */
const download = (
  asset: Assets.AssetName,
  url: string,
  expected: string,
  cachePath: string,
  onProgress: Assets.ResolveOptions["onProgress"]
) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const client = (yield* HttpClient.HttpClient).pipe(HttpClient.followRedirects(10), HttpClient.withScope)
    const tempPath = yield* Effect.acquireRelease(
      Effect.sync(() => `${cachePath}.${randomBytes(6).toString("hex")}.partial`),
      (tempPath) => Effect.ignore(fs.remove(tempPath, { force: true }))
    )
    const response = yield* client.get(url)
    if (response.status < 200 || response.status >= 300) {
      return yield* new AssetError({ asset, reason: `download of ${url} failed: HTTP status ${response.status}` })
    }
    const totalBytes = contentLength(response.headers["content-length"])
    const hash = createHash("sha256")
    let receivedBytes = 0
    yield* response.stream.pipe(
      Stream.tap((chunk) =>
        Effect.try({
          try: () => {
            hash.update(chunk)
            receivedBytes += chunk.length
            onProgress?.({ asset, url, receivedBytes, totalBytes })
          },
          catch: (error) => new AssetError({ asset, reason: `the onProgress callback threw: ${String(error)}` })
        })
      ),
      Stream.run(fs.sink(tempPath))
    )
    const actual = hash.digest("hex")
    if (actual !== expected) {
      return yield* new AssetError({
        asset,
        reason: `sha256 mismatch for ${url}: expected ${expected}, got ${actual} (${receivedBytes} bytes); ` +
          `nothing was cached`
      })
    }
    yield* fs.rename(tempPath, cachePath)
  }).pipe(
    Effect.scoped,
    Effect.catchTag(
      "RequestError",
      "ResponseError",
      (error) => new AssetError({ asset, reason: `download of ${url} failed: ${describeHttpError(error)}` })
    ),
    Effect.catchTag(
      "SystemError",
      "BadArgument",
      (error) => new AssetError({ asset, reason: `cannot store the download of ${url}: ${platformReason(error)}` })
    )
  )

export const defaultAssetsDir = (): string => join(homedir(), ".v86box")

/**
 * A `{ url, sha256 }` asset: from the cache when its hash matches, else downloaded into
 * it. `downloaded` tells which. Gives the cached file, not its bytes: a root disk is
 * read by the machine as the guest asks.
 */
export const cacheRemote = (
  asset: Assets.AssetName,
  source: { readonly url: string; readonly sha256: string },
  assetsDir: string,
  onProgress: Assets.ResolveOptions["onProgress"]
) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    if (!sha256Pattern.test(source.sha256)) {
      return yield* new AssetError({
        asset,
        reason: `the sha256 given for ${source.url} must be 64 hex characters, got "${source.sha256}"`
      })
    }
    const expected = source.sha256.toLowerCase()
    const cacheDir = path.join(assetsDir, "cache")
    const cachePath = path.join(cacheDir, expected)
    const cacheError = (error: PlatformError) =>
      new AssetError({ asset, reason: `cannot use the cache dir "${cacheDir}": ${platformReason(error)}` })

    if (yield* fs.exists(cachePath).pipe(Effect.mapError(cacheError))) {
      const cached = yield* hashFile(asset, cachePath)
      if (cached.sha256 === expected) return { path: cachePath, size: cached.size, sha256: expected, downloaded: false }
      // Damaged outside our control (we only ever rename verified files in): fetch it again.
      yield* fs.remove(cachePath, { force: true }).pipe(Effect.mapError(cacheError))
    }
    yield* fs.makeDirectory(cacheDir, { recursive: true }).pipe(Effect.mapError(cacheError))
    yield* download(asset, source.url, expected, cachePath, onProgress)
    // Hashed while it streamed in: the memo spares the next reader another pass.
    const { size, key } = yield* statForMemo(asset, cachePath).pipe(
      Effect.catchTag("SystemError", "BadArgument", (error) => Effect.fail(cacheError(error)))
    )
    if (Option.isSome(key)) hashedFiles.set(key.value, expected)
    return { path: cachePath, size: Number(size), sha256: expected, downloaded: true }
  })

/**
 * Checks every download in `${assetsDir}/cache/` against the sha256 it is named by. A
 * damaged file would be fetched again on its next use; verifying reports it instead.
 */
export const verifyCache = (assetsDir: string = defaultAssetsDir()) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const cacheDir = path.join(path.resolve(assetsDir), "cache")
    const cacheError = (error: PlatformError) =>
      new AssetError({ asset: "cache", reason: `cannot read the cache dir "${cacheDir}": ${platformReason(error)}` })
    if (!(yield* fs.exists(cacheDir).pipe(Effect.mapError(cacheError)))) return []
    const names = (yield* fs.readDirectory(cacheDir).pipe(Effect.mapError(cacheError)))
      .filter((name) => sha256Pattern.test(name))
      .sort()
    const verified: Array<Assets.VerifiedFile> = []
    for (const name of names) {
      const filePath = path.join(cacheDir, name)
      const loaded = yield* readHashed("cache", filePath)
      if (loaded.sha256 !== name.toLowerCase()) {
        return yield* new AssetError({
          asset: "cache",
          reason: `cached file "${filePath}" is corrupt: its sha256 is ${loaded.sha256} (it will be downloaded again ` +
            `when next used)`
        })
      }
      verified.push({ asset: "cache", path: filePath, size: loaded.bytes.length, sha256: loaded.sha256 })
    }
    return verified
  })

const loadRemote = (...args: Parameters<typeof cacheRemote>) =>
  Effect.flatMap(cacheRemote(...args), ({ path }) => readHashed(args[0], path))

// ---------------------------------------------------------------------------
// The root disk
// ---------------------------------------------------------------------------

/**
 * The size and sha256 of a file, read a chunk at a time: a root disk (~40 MB) is never
 * held whole. Memoized per process like `readHashed`.
 */
const hashFile = (asset: string, filePath: string) =>
  Effect.gen(function*() {
    const { size, key } = yield* statForMemo(asset, filePath)
    const memoized = Option.flatMapNullable(key, (k) => hashedFiles.get(k))
    if (Option.isSome(memoized)) return { size: Number(size), sha256: memoized.value }
    const hashed = yield* Effect.tryPromise({
      try: async () => {
        const file = await open(filePath, "r")
        try {
          const hash = createHash("sha256")
          const chunk = Buffer.alloc(1 << 20)
          let size = 0
          for (let read; (read = (await file.read(chunk, 0, chunk.length, null)).bytesRead) > 0; size += read) {
            hash.update(chunk.subarray(0, read))
          }
          return { size, sha256: hash.digest("hex") }
        } finally {
          await file.close()
        }
      },
      catch: (error) => new AssetError({ asset, reason: `cannot read "${filePath}": ${String((error as Error).message ?? error)}` })
    })
    if (Option.isSome(key) && BigInt(hashed.size) === size) hashedFiles.set(key.value, hashed.sha256)
    return hashed
  }).pipe(
    Effect.catchTag(
      "SystemError",
      "BadArgument",
      (error) => new AssetError({ asset, reason: `cannot read "${filePath}": ${platformReason(error)}` })
    )
  )

/** A root disk file as it is, checked against what it must be when that is known. */
const diskAt = (filePath: string, expected?: { readonly size: number; readonly sha256: string }) =>
  Effect.gen(function*() {
    const hashed = yield* hashFile("rootfs", filePath)
    if (expected !== undefined && (hashed.size !== expected.size || hashed.sha256 !== expected.sha256.toLowerCase())) {
      return yield* new AssetError({
        asset: "rootfs",
        reason: `"${filePath}" is not the image's root disk: expected ${expected.size} bytes with sha256 ` +
          `${expected.sha256}, found ${hashed.size} bytes with sha256 ${hashed.sha256}`
      })
    }
    return { path: filePath, byteLength: hashed.size, sha256: hashed.sha256 } satisfies Assets.RootDisk
  })

/**
 * The bundled root disk. Stored brotli-compressed (~9 MB for ~40 MB), it is unpacked
 * once into `${assetsDir}/disks/<sha256>` (verified, then renamed into place: never a
 * partial file) and read from there; a damaged unpacked copy is unpacked again. A bundle
 * whose manifest has no `unpacked` entry ships its disk as it is.
 */
const bundledRootDisk = (dir: string, entry: ManifestFileEntry, assetsDir: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const unpacked = entry.unpacked
    if (unpacked === undefined) return yield* diskAt(path.join(dir, entry.path), entry)
    const disksDir = path.join(assetsDir, "disks")
    const diskPath = path.join(disksDir, unpacked.sha256.toLowerCase())
    const dirError = (error: PlatformError) =>
      new AssetError({
        asset: "rootfs",
        reason: `cannot unpack the root disk into "${disksDir}" (set assetsDir to a writable dir): ${platformReason(error)}`
      })
    if (yield* fs.exists(diskPath).pipe(Effect.mapError(dirError))) {
      const existing = yield* Effect.either(diskAt(diskPath, unpacked))
      if (existing._tag === "Right") return existing.right
      yield* Effect.logWarning(`v86box: unpacking the root disk again: ${existing.left.reason}`)
      yield* fs.remove(diskPath, { force: true }).pipe(Effect.mapError(dirError))
    }
    const compressed = yield* loadBundled("rootfs", dir, entry)
    const bytes = yield* Effect.tryPromise({
      try: () => promisify(brotliDecompress)(compressed.bytes),
      catch: (error) =>
        new AssetError({ asset: "rootfs", reason: `bundled file "${entry.path}" does not unpack: ${String(error)}` })
    })
    const sha256 = sha256Hex(bytes)
    if (bytes.length !== unpacked.size || sha256 !== unpacked.sha256.toLowerCase()) {
      return yield* new AssetError({
        asset: "rootfs",
        reason: `bundled file "${entry.path}" unpacks to ${bytes.length} bytes with sha256 ${sha256}; the manifest ` +
          `says ${unpacked.size} bytes with sha256 ${unpacked.sha256}`
      })
    }
    yield* fs.makeDirectory(disksDir, { recursive: true }).pipe(Effect.mapError(dirError))
    yield* Effect.acquireUseRelease(
      Effect.sync(() => `${diskPath}.${randomBytes(6).toString("hex")}.partial`),
      (tempPath) => Effect.zipRight(fs.writeFile(tempPath, bytes), fs.rename(tempPath, diskPath)),
      (tempPath) => Effect.ignore(fs.remove(tempPath, { force: true }))
    ).pipe(Effect.mapError(dirError))
    // Disks of other images (an upgrade, another image build) are not read again.
    yield* CacheFiles.prune(disksDir, { names: UNPACKED_DISK_NAME, keep: DISKS_KEPT, except: diskPath })
    return yield* diskAt(diskPath, unpacked)
  })

/** The names bundledRootDisk gives unpacked disks, and its leftovers of them. */
const UNPACKED_DISK_NAME = /^[0-9a-f]{64}(\..+\.partial)?$/

/** Disks kept in `assetsDir/disks` however old: the one just unpacked and the newest other. */
const DISKS_KEPT = 2

/** The root disk from where `source` says (a path or a download), or the bundled one. */
const loadRootDisk = (
  source: Assets.AssetSource | undefined,
  manifest: typeof Manifest.Type,
  bundledDir: string,
  options: Assets.ResolveOptions,
  assetsDir: string
) =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    if (typeof source === "string") return yield* diskAt(path.resolve(source))
    if (source !== undefined) {
      const cached = yield* cacheRemote("rootfs", source, assetsDir, options.onProgress)
      return { path: cached.path, byteLength: cached.size, sha256: cached.sha256 } satisfies Assets.RootDisk
    }
    const entry = manifest.files.rootfs
    if (entry === undefined) return yield* new AssetError({ asset: "rootfs", reason: "the bundled manifest has no such file" })
    return yield* bundledRootDisk(bundledDir, entry, assetsDir)
  })

// ---------------------------------------------------------------------------
// resolve
// ---------------------------------------------------------------------------

/**
 * Identifies the image: the sha256 of every asset in a fixed order, plus the kernel
 * command line (the same files booted with another command line are another machine).
 */
const fingerprintOf = (hashes: Record<Assets.AssetName, string | undefined>, cmdline: string): string => {
  const lines = [
    "v86box-image-fingerprint 3",
    ...assetNames.map((name) => `${name} ${hashes[name] ?? "-"}`),
    `cmdline ${cmdline}`
  ]
  return sha256Hex(`${lines.join("\n")}\n`)
}

export const resolve = (options: Assets.ResolveOptions = {}, bundledDir: string = bundledAssetsDir) =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    const manifest = yield* readManifest(bundledDir)
    const sources = options.assets ?? {}
    const assetsDir = path.resolve(options.assetsDir ?? defaultAssetsDir())

    const load = (asset: Assets.AssetName) => {
      const source = sources[asset]
      if (source === undefined) {
        const entry = manifest.files[asset]
        if (asset === "wasm") return loadDefaultWasm
        if (entry === undefined) return Effect.fail(new AssetError({ asset, reason: "the bundled manifest has no such file" }))
        return loadBundled(asset, bundledDir, entry)
      }
      if (typeof source === "string") return readHashed(asset, path.resolve(source))
      return loadRemote(asset, source, assetsDir, options.onProgress)
    }

    const present = (asset: Assets.AssetName) => sources[asset] !== undefined || manifest.files[asset] !== undefined
    const loadIfPresent = (asset: Assets.AssetName) =>
      present(asset) ? Effect.map(load(asset), Option.some) : Effect.succeed(Option.none<LoadedFile>())
    const loaded = yield* Effect.all({
      kernel: load("kernel"),
      initrd: loadIfPresent("initrd"),
      rootfs: present("rootfs")
        ? Effect.map(loadRootDisk(sources.rootfs, manifest, bundledDir, options, assetsDir), Option.some)
        : Effect.succeed(Option.none<Assets.RootDisk>()),
      bios: load("bios"),
      vgaBios: load("vgaBios"),
      wasm: load("wasm")
    }, { concurrency: "unbounded" })
    if (Option.isNone(loaded.initrd) && Option.isNone(loaded.rootfs)) {
      return yield* new AssetError({ asset: "initrd", reason: "the image has neither an initrd nor a root disk to boot" })
    }
    const bytesOf = (file: Option.Option<LoadedFile>) => Option.getOrUndefined(Option.map(file, (f) => f.bytes))
    const hashOf = (file: Option.Option<LoadedFile>) => Option.getOrUndefined(Option.map(file, (f) => f.sha256))

    return {
      kernel: loaded.kernel.bytes,
      initrd: bytesOf(loaded.initrd),
      rootfs: Option.getOrUndefined(loaded.rootfs),
      bios: loaded.bios.bytes,
      vgaBios: loaded.vgaBios.bytes,
      wasm: loaded.wasm.bytes,
      cmdline: manifest.cmdline,
      memoryMB: manifest.memoryMB,
      fingerprint: fingerprintOf({
        kernel: loaded.kernel.sha256,
        initrd: hashOf(loaded.initrd),
        rootfs: Option.getOrUndefined(Option.map(loaded.rootfs, (disk) => disk.sha256)),
        bios: loaded.bios.sha256,
        vgaBios: loaded.vgaBios.sha256,
        wasm: loaded.wasm.sha256
      }, manifest.cmdline),
      manifest
    } satisfies Assets.ResolvedAssets
  })
