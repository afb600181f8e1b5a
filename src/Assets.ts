/**
 * The files a v86box machine boots from: kernel, initrd, BIOS, VGA BIOS and the v86
 * wasm. By default they are the image bundled in the package's `assets/` dir (offline,
 * checked against its manifest); each one can be replaced by a local file or by a
 * `{ url, sha256 }` that is downloaded once into a cache dir and verified.
 *
 * @since 0.1.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Path from "@effect/platform/Path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Schema from "effect/Schema"
import type { AssetError } from "./Errors.ts"
import * as internal from "./internal/assets.ts"

/**
 * The assets a machine boots from.
 *
 * @since 0.1.0
 * @category models
 */
export type AssetName = "kernel" | "initrd" | "rootfs" | "bios" | "vgaBios" | "wasm"

/**
 * Where an asset comes from: a local file path, or a URL with the sha256 its bytes
 * must have. URL assets are downloaded once into `${assetsDir}/cache/` and reused.
 *
 * @since 0.1.0
 * @category models
 */
export type AssetSource = string | { readonly url: string; readonly sha256: string }

/**
 * Schema of {@link AssetSource}: a non-empty path, or `{ url, sha256 }` with a
 * 64-character hex sha256 (either case). For decoding user options before any work.
 *
 * @since 0.1.0
 * @category schemas
 */
export const AssetSource: Schema.Schema<AssetSource> = internal.AssetSource

/**
 * Replacements for some or all of the bundled assets; the others stay bundled.
 *
 * @since 0.1.0
 * @category models
 */
export interface AssetSources {
  readonly kernel?: AssetSource | undefined
  readonly initrd?: AssetSource | undefined
  /** A root filesystem disk image (attached as the first IDE disk). */
  readonly rootfs?: AssetSource | undefined
  /** SeaBIOS: run only with `firmware: "seabios"` (the default direct boot needs no BIOS). */
  readonly bios?: AssetSource | undefined
  /** The VGA BIOS: run only with `firmware: "seabios"`. */
  readonly vgaBios?: AssetSource | undefined
  readonly wasm?: AssetSource | undefined
}

/**
 * Schema of {@link AssetSources}.
 *
 * @since 0.1.0
 * @category schemas
 */
export const AssetSources: Schema.Schema<AssetSources> = internal.AssetSources

/**
 * Reported while a URL asset downloads, after each chunk: `receivedBytes` grows and
 * ends at the full size. `totalBytes` is the server's Content-Length, if it sent one.
 *
 * @since 0.1.0
 * @category models
 */
export interface DownloadProgress {
  readonly asset: AssetName
  readonly url: string
  readonly receivedBytes: number
  readonly totalBytes: number | undefined
}

/**
 * Options of {@link resolve}.
 *
 * - `assets`: replacements for bundled assets.
 * - `assetsDir`: where downloads are cached (`${assetsDir}/cache/<sha256>`); default `~/.v86box`.
 * - `onProgress`: called as URL assets download. If it throws, the download fails.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolveOptions {
  readonly assets?: AssetSources | undefined
  readonly assetsDir?: string | undefined
  /** Called as URL assets download. If it throws, the download fails. */
  readonly onProgress?: ((progress: DownloadProgress) => void) | undefined
}

/**
 * Schema of the bundled image's `assets/manifest.json`: for every file its path
 * (relative to the manifest), size, sha256 and the Debian source packages it came
 * from; the kernel command line and the minimum memory the image needs.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Manifest = internal.Manifest

/**
 * A decoded image manifest.
 *
 * @since 0.1.0
 * @category models
 */
export interface Manifest extends Schema.Schema.Type<typeof Manifest> {}

/**
 * Everything a machine needs to boot, as bytes, plus what the manifest says about
 * booting them.
 *
 * - `cmdline`: the kernel command line from the bundled manifest (also used with a custom kernel).
 * - `memoryMB`: the guest memory the image needs at least.
 * - `fingerprint`: sha256 hex over the sha256 of every asset (in the order kernel,
 *   initrd, bios, vgaBios, wasm) and the command line. Equal fingerprints mean the same
 *   machine: key snapshot caches and transcripts with it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolvedAssets {
  readonly kernel: Uint8Array
  /** Absent when the image boots from its root disk alone. */
  readonly initrd: Uint8Array | undefined
  /** The root filesystem disk, when the image has one: a file the machine reads as the guest asks. */
  readonly rootfs: RootDisk | undefined
  readonly bios: Uint8Array
  readonly vgaBios: Uint8Array
  readonly wasm: Uint8Array
  readonly cmdline: string
  readonly memoryMB: number
  readonly fingerprint: string
  readonly manifest: Manifest
}

/**
 * A root filesystem disk image on the host. The machine reads it as the guest asks (it is
 * never loaded whole) and never writes it: sectors a guest writes stay in its own machine.
 * The bundled one is stored brotli-compressed and unpacked once into the assets dir
 * (`<assetsDir>/disks/<sha256>`).
 *
 * @since 0.1.0
 * @category models
 */
export interface RootDisk {
  readonly path: string
  readonly byteLength: number
  /** sha256 hex of the disk's bytes. */
  readonly sha256: string
}

/**
 * Absolute path of the package's `assets/` dir, which holds the bundled image and
 * its `manifest.json`.
 *
 * @since 0.1.0
 * @category constants
 */
export const bundledAssetsDir: string = internal.bundledAssetsDir

/**
 * Reads and decodes `manifest.json` from `dir` (default: the bundled assets). Fails
 * with an `AssetError` for asset `"manifest"` if it is missing or does not decode.
 *
 * @since 0.1.0
 * @category constructors
 */
export const readManifest: (dir?: string) => Effect.Effect<Manifest, AssetError, FileSystem.FileSystem | Path.Path> =
  internal.readManifest

/**
 * A file that matched its manifest entry.
 *
 * @since 0.1.0
 * @category models
 */
export interface VerifiedFile {
  /** The manifest's name for it: `kernel`, `initrd`, `rootfs`, `bios`, `vgaBios`… */
  readonly asset: string
  readonly path: string
  readonly size: number
  readonly sha256: string
}

/**
 * Checks every file that `dir/manifest.json` lists (default: the bundled image)
 * against its size and sha256, and returns them. A missing, truncated or corrupt file
 * fails with an `AssetError` naming the asset and both the expected and the actual value.
 *
 * @since 0.1.0
 * @category verification
 */
export const verify: (
  dir?: string
) => Effect.Effect<ReadonlyArray<VerifiedFile>, AssetError, FileSystem.FileSystem | Path.Path> = (dir) =>
  internal.verifyBundled(dir)

/**
 * {@link verify} of the bundled image.
 *
 * @since 0.1.0
 * @category verification
 */
export const verifyBundled: Effect.Effect<ReadonlyArray<VerifiedFile>, AssetError, FileSystem.FileSystem | Path.Path> =
  internal.verifyBundled()

/**
 * Checks every download in `${assetsDir}/cache/` (default `~/.v86box`) against the
 * sha256 it is named by, and returns them (none if there is no cache yet). A damaged
 * file fails with an `AssetError`; {@link resolve} would download it again.
 *
 * @since 0.1.0
 * @category verification
 */
export const verifyCache: (
  assetsDir?: string
) => Effect.Effect<ReadonlyArray<VerifiedFile>, AssetError, FileSystem.FileSystem | Path.Path> = (assetsDir) =>
  internal.verifyCache(assetsDir)

/**
 * Where a downloaded asset is kept: `${assetsDir}/cache/<sha256>`. `downloaded` is false
 * when the cache already held the verified file.
 *
 * @since 0.1.0
 * @category models
 */
export interface CachedAsset {
  readonly path: string
  readonly size: number
  readonly downloaded: boolean
}

/**
 * Options of {@link download}: the cache dir (default `~/.v86box`) and a progress callback.
 *
 * @since 0.1.0
 * @category models
 */
export interface DownloadOptions {
  readonly assetsDir?: string | undefined
  /** Called after each chunk of the download. If it throws, the download fails. */
  readonly onProgress?: ((progress: DownloadProgress) => void) | undefined
}

/**
 * Puts a URL asset into the cache ahead of time, as {@link resolve} would on first use:
 * downloaded unless the cache already holds a file with that sha256, verified before it
 * is kept. Later `resolve` calls with the same `{ url, sha256 }` and `assetsDir` read it
 * offline. Every failure is an `AssetError` naming `asset`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const download = (
  asset: AssetName,
  source: { readonly url: string; readonly sha256: string },
  options: DownloadOptions = {}
): Effect.Effect<CachedAsset, AssetError, HttpClient.HttpClient | FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    const assetsDir = path.resolve(options.assetsDir ?? internal.defaultAssetsDir())
    const cached = yield* internal.cacheRemote(asset, source, assetsDir, options.onProgress)
    return { path: cached.path, size: cached.size, downloaded: cached.downloaded }
  })

/**
 * Resolves every asset to bytes: bundled files (verified against the manifest; the
 * wasm from the installed `v86` package), local paths, or URLs. A URL asset is taken
 * from the cache when its sha256 matches, else downloaded with `HttpClient` into a
 * temp file, verified, and renamed into the cache; on a wrong sha256, an HTTP error
 * or an interruption nothing is left in the cache. Every failure is an `AssetError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolve: (
  options?: ResolveOptions
) => Effect.Effect<ResolvedAssets, AssetError, HttpClient.HttpClient | FileSystem.FileSystem | Path.Path> = (
  options
) => internal.resolve(options)

/**
 * The Node implementations of what {@link resolve} needs: an HTTP client, the file
 * system and paths.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNode: Layer.Layer<HttpClient.HttpClient | FileSystem.FileSystem | Path.Path> = Layer.mergeAll(
  NodeHttpClient.layer,
  NodeFileSystem.layer,
  NodePath.layer
)

/**
 * {@link resolve} with {@link layerNode} provided: needs nothing from the caller.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolveNode = (options?: ResolveOptions): Effect.Effect<ResolvedAssets, AssetError> =>
  Effect.provide(resolve(options), layerNode)
