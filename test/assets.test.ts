import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { createHash, randomBytes } from "node:crypto"
import { brotliCompressSync, constants as zlibConstants } from "node:zlib"
import * as Assets from "../src/Assets.ts"
import { AssetError } from "../src/Errors.ts"
import * as internal from "../src/internal/assets.ts"
import { refusedUrl, serveDirectory } from "./helpers/httpServer.ts"

/** Quality 11 (the default) takes ~0.5 s for the fixture's disk. */
const fastBrotli = { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 4 } }

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex")

const bundledNames = ["kernel", "initrd", "bios", "vgaBios"] as const
type BundledName = typeof bundledNames[number]

const fixtureSizes: Record<BundledName, number> = {
  kernel: 300_000,
  initrd: 700_000,
  bios: 131_072,
  vgaBios: 36_864
}

/**
 * A temp dir holding a small image (random bytes plus a manifest, shaped like the real
 * one) in `image/`, an empty `home/` to use as `assetsDir`, and `served/` for the HTTP
 * server. Removed when the test's scope closes.
 */
const makeFixture = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const root = yield* fs.makeTempDirectoryScoped({ prefix: "v86box-assets-" })
  const imageDir = path.join(root, "image")
  const assetsDir = path.join(root, "home")
  const servedDir = path.join(root, "served")
  yield* fs.makeDirectory(imageDir)
  yield* fs.makeDirectory(servedDir)
  const files = {} as Record<BundledName, { readonly path: string; readonly bytes: Uint8Array }>
  const entries: Record<string, unknown> = {}
  for (const name of bundledNames) {
    const bytes = new Uint8Array(randomBytes(fixtureSizes[name]))
    const fileName = `${name}.bin`
    yield* fs.writeFile(path.join(imageDir, fileName), bytes)
    files[name] = { path: path.join(imageDir, fileName), bytes }
    entries[name] = {
      path: fileName,
      size: bytes.length,
      sha256: sha256(bytes),
      sources: [{ package: "fixture", version: "1" }]
    }
  }
  const manifest = {
    format: 1,
    v86: "0.5.462",
    agentProtocol: 1,
    memoryMB: 128,
    cmdline: "console=ttyS0 quiet",
    files: entries,
    packages: [{ package: "bash", version: "5.2.15-2+b2", arch: "i386", source: "bash", sourceVersion: "5.2.15-2" }],
    reproducible: true,
    notReproducible: []
  }
  yield* fs.writeFileString(path.join(imageDir, "manifest.json"), JSON.stringify(manifest, null, 2))
  const serve = (name: string, bytes: Uint8Array) => fs.writeFile(path.join(servedDir, name), bytes)
  const cacheEntries = fs.exists(path.join(assetsDir, "cache")).pipe(
    Effect.flatMap((exists) => exists ? fs.readDirectory(path.join(assetsDir, "cache")) : Effect.succeed([]))
  )
  return { root, imageDir, assetsDir, servedDir, files, serve, cacheEntries }
})

const expectAssetError = <A, R>(effect: Effect.Effect<A, AssetError, R>) =>
  Effect.flip(effect).pipe(Effect.tap((error) => assert.instanceOf(error, AssetError)))

layer(Assets.layerNode)("Assets", (it) => {
  describe("bundled image", () => {
    it.scoped("resolves the bundled files and the v86 wasm with the manifest's cmdline and memory", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const resolved = yield* internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir)
        for (const name of bundledNames) assert.deepStrictEqual(resolved[name], fixture.files[name].bytes)
        // "\0asm": a WebAssembly module
        assert.deepStrictEqual([...resolved.wasm.subarray(0, 4)], [0x00, 0x61, 0x73, 0x6d])
        assert.strictEqual(resolved.cmdline, "console=ttyS0 quiet")
        assert.strictEqual(resolved.memoryMB, 128)
        assert.match(resolved.fingerprint, /^[0-9a-f]{64}$/)
        // offline: nothing was downloaded, so no cache dir was made
        assert.deepStrictEqual(yield* fixture.cacheEntries, [])
      }))

    it.scoped("a corrupt bundled file fails naming the asset, the expected and the actual sha256", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* makeFixture
        const corrupt = new Uint8Array(fixture.files.initrd.bytes)
        corrupt[1000] = corrupt[1000]! ^ 0xff
        yield* fs.writeFile(fixture.files.initrd.path, corrupt)
        const error = yield* expectAssetError(internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir))
        assert.strictEqual(error.asset, "initrd")
        assert.include(error.message, sha256(fixture.files.initrd.bytes))
        assert.include(error.message, sha256(corrupt))
        assert.include(error.message, "corrupt")
      }))

    it.scoped("a truncated bundled file fails naming the asset and both sizes", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* makeFixture
        yield* fs.truncate(fixture.files.kernel.path, 4096)
        const error = yield* expectAssetError(internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir))
        assert.strictEqual(error.asset, "kernel")
        assert.include(error.message, `expected ${fixtureSizes.kernel} bytes, found 4096`)
      }))

    it.scoped("verifyBundled passes on a good image and names the damaged file on a bad one", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* makeFixture
        yield* internal.verifyBundled(fixture.imageDir)
        yield* fs.writeFile(fixture.files.vgaBios.path, new Uint8Array(fixtureSizes.vgaBios))
        const error = yield* expectAssetError(internal.verifyBundled(fixture.imageDir))
        assert.strictEqual(error.asset, "vgaBios")
        assert.include(error.message, sha256(fixture.files.vgaBios.bytes))
      }))

    it.scoped("a missing or malformed manifest is an AssetError for \"manifest\"", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const fixture = yield* makeFixture
        const manifestPath = path.join(fixture.imageDir, "manifest.json")
        const manifest = JSON.parse(yield* fs.readFileString(manifestPath))

        yield* fs.writeFileString(manifestPath, JSON.stringify({ ...manifest, files: { kernel: manifest.files.kernel } }))
        const invalid = yield* expectAssetError(internal.readManifest(fixture.imageDir))
        assert.strictEqual(invalid.asset, "manifest")
        assert.include(invalid.message, "initrd")

        yield* fs.writeFileString(manifestPath, "{ not json")
        assert.strictEqual((yield* expectAssetError(internal.readManifest(fixture.imageDir))).asset, "manifest")

        yield* fs.remove(manifestPath)
        const missing = yield* expectAssetError(internal.resolve({}, fixture.imageDir))
        assert.strictEqual(missing.asset, "manifest")
        assert.include(missing.message, manifestPath)
      }))
  })

  describe("local paths", () => {
    it.scoped("a path source replaces the bundled file", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const fixture = yield* makeFixture
        const kernel = new Uint8Array(randomBytes(50_000))
        const kernelPath = path.join(fixture.root, "my-bzImage")
        yield* fs.writeFile(kernelPath, kernel)
        const resolved = yield* internal.resolve({ assets: { kernel: kernelPath } }, fixture.imageDir)
        assert.deepStrictEqual(resolved.kernel, kernel)
        assert.deepStrictEqual(resolved.initrd, fixture.files.initrd.bytes)
      }))

    it.scoped("a missing path fails with the path and the OS reason", () =>
      Effect.gen(function*() {
        const path = yield* Path.Path
        const fixture = yield* makeFixture
        const missing = path.join(fixture.root, "no-such-bios.bin")
        const error = yield* expectAssetError(internal.resolve({ assets: { bios: missing } }, fixture.imageDir))
        assert.strictEqual(error.asset, "bios")
        assert.include(error.message, missing)
        assert.include(error.message, "ENOENT")
      }))
  })

  describe("root disk", () => {
    /** The fixture plus a bundled root disk shipped as the real one is: brotli, with its unpacked size and sha256. */
    const withRootDisk = Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const fixture = yield* makeFixture
      // Half random, half zeros: compressible, and every byte checked.
      const disk = new Uint8Array(256 * 1024)
      disk.set(randomBytes(128 * 1024))
      const compressed = new Uint8Array(brotliCompressSync(disk, fastBrotli))
      yield* fs.writeFile(path.join(fixture.imageDir, "rootfs.squashfs.br"), compressed)
      const manifestPath = path.join(fixture.imageDir, "manifest.json")
      const manifest = JSON.parse(yield* fs.readFileString(manifestPath))
      manifest.files.rootfs = {
        path: "rootfs.squashfs.br",
        size: compressed.length,
        sha256: sha256(compressed),
        sources: [{ package: "fixture", version: "1" }],
        unpacked: { size: disk.length, sha256: sha256(disk) }
      }
      yield* fs.writeFileString(manifestPath, JSON.stringify(manifest))
      const diskPath = path.join(fixture.assetsDir, "disks", sha256(disk))
      return { ...fixture, disk, diskPath, manifestPath, manifest }
    })

    it.scoped("is unpacked once into the assets dir, then read from there", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* withRootDisk
        const first = yield* internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir)
        assert.deepStrictEqual(first.rootfs, { path: fixture.diskPath, byteLength: fixture.disk.length, sha256: sha256(fixture.disk) })
        assert.deepStrictEqual(new Uint8Array(yield* fs.readFile(fixture.diskPath)), fixture.disk)
        const unpackedAt = (yield* fs.stat(fixture.diskPath)).mtime
        // Without the compressed file the second run still has its disk: it did not unpack again.
        yield* fs.remove(`${fixture.imageDir}/rootfs.squashfs.br`)
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
        const second = yield* internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir)
        assert.deepStrictEqual(second.rootfs, first.rootfs)
        assert.strictEqual(second.fingerprint, first.fingerprint)
        assert.deepStrictEqual((yield* fs.stat(fixture.diskPath)).mtime, unpackedAt)
        assert.deepStrictEqual(yield* fs.readDirectory(`${fixture.assetsDir}/disks`), [sha256(fixture.disk)])
      }))

    it.scoped("a damaged unpacked copy is unpacked again", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* withRootDisk
        yield* internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir)
        const damaged = new Uint8Array(fixture.disk)
        damaged[5] = damaged[5]! ^ 0xff
        yield* fs.writeFile(fixture.diskPath, damaged)
        const resolved = yield* internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir)
        assert.strictEqual(resolved.rootfs?.sha256, sha256(fixture.disk))
        assert.deepStrictEqual(new Uint8Array(yield* fs.readFile(fixture.diskPath)), fixture.disk)
      }))

    it.scoped("a compressed disk that unpacks to the wrong bytes fails naming both, and leaves nothing unpacked", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* withRootDisk
        const other = new Uint8Array(randomBytes(1000))
        const compressed = new Uint8Array(brotliCompressSync(other, fastBrotli))
        yield* fs.writeFile(`${fixture.imageDir}/rootfs.squashfs.br`, compressed)
        fixture.manifest.files.rootfs.size = compressed.length
        fixture.manifest.files.rootfs.sha256 = sha256(compressed)
        yield* fs.writeFileString(fixture.manifestPath, JSON.stringify(fixture.manifest))
        const error = yield* expectAssetError(internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir))
        assert.strictEqual(error.asset, "rootfs")
        assert.include(error.message, sha256(other))
        assert.include(error.message, sha256(fixture.disk))
        assert.isFalse(yield* fs.exists(fixture.diskPath))
      }))

    it.scoped("an assets dir it cannot write to is an AssetError saying so", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* withRootDisk
        // A file where the assets dir should be: nothing can be made inside it.
        yield* fs.writeFileString(fixture.assetsDir, "not a directory")
        const error = yield* expectAssetError(internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir))
        assert.strictEqual(error.asset, "rootfs")
        assert.include(error.message, "assetsDir")
      }))

    it.scoped("unpacking a new image's disk removes older disks but the newest, none written within the hour, nothing else", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* withRootDisk
        const disks = `${fixture.assetsDir}/disks`
        yield* fs.makeDirectory(disks, { recursive: true })
        const twoHoursAgo = new Date(Date.now() - 2 * 3600_000)
        const threeHoursAgo = new Date(Date.now() - 3 * 3600_000)
        // Older images' disks (two and three hours old), one written a minute ago, a
        // leftover of an interrupted unpack, a file not ours.
        const stale = `${"a".repeat(64)}`, newer = `${"b".repeat(64)}`, recent = `${"d".repeat(64)}`
        const leftover = `${"c".repeat(64)}.0011aabb.partial`
        for (const name of [stale, newer, recent, leftover, "notes.txt"]) yield* fs.writeFileString(`${disks}/${name}`, name)
        for (const name of [stale, leftover, "notes.txt"]) yield* fs.utimes(`${disks}/${name}`, threeHoursAgo, threeHoursAgo)
        yield* fs.utimes(`${disks}/${newer}`, twoHoursAgo, twoHoursAgo)
        yield* fs.utimes(`${disks}/${recent}`, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000))
        yield* internal.resolve({ assetsDir: fixture.assetsDir }, fixture.imageDir)
        assert.deepStrictEqual(
          [...(yield* fs.readDirectory(disks))].sort(),
          [sha256(fixture.disk), recent, "notes.txt"].sort()
        )
      }))

    it.scoped("a path source is used where it is, unpacked already", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const fixture = yield* withRootDisk
        const own = new Uint8Array(randomBytes(64 * 1024))
        const ownPath = `${fixture.root}/my-disk.img`
        yield* fs.writeFile(ownPath, own)
        const resolved = yield* internal.resolve({ assets: { rootfs: ownPath }, assetsDir: fixture.assetsDir }, fixture.imageDir)
        assert.deepStrictEqual(resolved.rootfs, { path: ownPath, byteLength: own.length, sha256: sha256(own) })
        assert.isFalse(yield* fs.exists(`${fixture.assetsDir}/disks`))
      }))
  })

  describe("fingerprint", () => {
    it.scoped("is stable across runs and changes when any asset changes", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const fixture = yield* makeFixture
        const first = yield* internal.resolve({}, fixture.imageDir)
        const second = yield* internal.resolve({}, fixture.imageDir)
        assert.strictEqual(second.fingerprint, first.fingerprint)

        const otherBios = new Uint8Array(fixture.files.bios.bytes)
        otherBios[0] = otherBios[0]! ^ 1
        const otherBiosPath = path.join(fixture.root, "other-bios.bin")
        yield* fs.writeFile(otherBiosPath, otherBios)
        const changed = yield* internal.resolve({ assets: { bios: otherBiosPath } }, fixture.imageDir)
        assert.notStrictEqual(changed.fingerprint, first.fingerprint)

        // the same bytes from another place are the same image
        const sameBiosPath = path.join(fixture.root, "same-bios.bin")
        yield* fs.writeFile(sameBiosPath, fixture.files.bios.bytes)
        const moved = yield* internal.resolve({ assets: { bios: sameBiosPath } }, fixture.imageDir)
        assert.strictEqual(moved.fingerprint, first.fingerprint)
      }))
  })

  describe("downloads", () => {
    it.scoped("downloads, verifies and caches a URL asset, reporting progress up to the total", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        const kernel = new Uint8Array(randomBytes(1_000_000))
        yield* fixture.serve("bzImage", kernel)
        const progress: Array<Assets.DownloadProgress> = []
        const resolved = yield* internal.resolve({
          assets: { kernel: { url: server.url("/bzImage"), sha256: sha256(kernel) } },
          assetsDir: fixture.assetsDir,
          onProgress: (event) => progress.push(event)
        }, fixture.imageDir)

        assert.deepStrictEqual(resolved.kernel, kernel)
        assert.deepStrictEqual(yield* fixture.cacheEntries, [sha256(kernel)])
        assert.strictEqual(server.requests(), 1)
        assert.isAbove(progress.length, 1)
        for (let i = 1; i < progress.length; i++) {
          assert.isAbove(progress[i]!.receivedBytes, progress[i - 1]!.receivedBytes)
        }
        assert.deepStrictEqual(progress.at(-1), {
          asset: "kernel",
          url: server.url("/bzImage"),
          receivedBytes: kernel.length,
          totalBytes: kernel.length
        })
      }))

    it.scoped("a second run uses the cache and makes no request", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        const initrd = new Uint8Array(randomBytes(200_000))
        yield* fixture.serve("rootfs.cpio.gz", initrd)
        const options = {
          assets: { initrd: { url: server.url("/rootfs.cpio.gz"), sha256: sha256(initrd).toUpperCase() } },
          assetsDir: fixture.assetsDir
        }
        const first = yield* internal.resolve(options, fixture.imageDir)
        assert.strictEqual(server.requests(), 1)
        let progressCalls = 0
        const second = yield* internal.resolve({ ...options, onProgress: () => progressCalls++ }, fixture.imageDir)
        assert.strictEqual(server.requests(), 1)
        assert.strictEqual(progressCalls, 0)
        assert.deepStrictEqual(second.initrd, initrd)
        assert.strictEqual(second.fingerprint, first.fingerprint)
      }))

    it.scoped("a damaged cache entry is downloaded again", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        const bios = new Uint8Array(randomBytes(100_000))
        yield* fixture.serve("bios.bin", bios)
        const options = { assets: { bios: { url: server.url("/bios.bin"), sha256: sha256(bios) } }, assetsDir: fixture.assetsDir }
        yield* internal.resolve(options, fixture.imageDir)
        yield* fs.writeFile(path.join(fixture.assetsDir, "cache", sha256(bios)), new Uint8Array(10))
        const resolved = yield* internal.resolve(options, fixture.imageDir)
        assert.deepStrictEqual(resolved.bios, bios)
        assert.strictEqual(server.requests(), 2)
      }))

    it.scoped("follows redirects", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        const vgaBios = new Uint8Array(randomBytes(40_000))
        yield* fixture.serve("vgabios.bin", vgaBios)
        const resolved = yield* internal.resolve({
          assets: { vgaBios: { url: server.url("/redirect/vgabios.bin"), sha256: sha256(vgaBios) } },
          assetsDir: fixture.assetsDir
        }, fixture.imageDir)
        assert.deepStrictEqual(resolved.vgaBios, vgaBios)
      }))

    it.scoped("a wrong sha256 fails naming expected and actual, and leaves nothing in the cache", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        const kernel = new Uint8Array(randomBytes(300_000))
        yield* fixture.serve("bzImage", kernel)
        const wrong = "0".repeat(64)
        const error = yield* expectAssetError(internal.resolve({
          assets: { kernel: { url: server.url("/bzImage"), sha256: wrong } },
          assetsDir: fixture.assetsDir
        }, fixture.imageDir))
        assert.strictEqual(error.asset, "kernel")
        assert.include(error.message, `expected ${wrong}`)
        assert.include(error.message, `got ${sha256(kernel)}`)
        assert.deepStrictEqual(yield* fixture.cacheEntries, [])
      }))

    it.scoped("an HTTP error status fails naming the status, with nothing cached", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        for (const [url, status] of [[server.url("/status/500"), "500"], [server.url("/missing.bin"), "404"]] as const) {
          const error = yield* expectAssetError(internal.resolve({
            assets: { initrd: { url, sha256: "a".repeat(64) } },
            assetsDir: fixture.assetsDir
          }, fixture.imageDir))
          assert.strictEqual(error.asset, "initrd")
          assert.include(error.message, `HTTP status ${status}`)
          assert.include(error.message, url)
        }
        assert.deepStrictEqual(yield* fixture.cacheEntries, [])
      }))

    it.scoped("a refused connection is an AssetError", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const url = yield* refusedUrl("/bzImage")
        const error = yield* expectAssetError(internal.resolve({
          assets: { kernel: { url, sha256: "b".repeat(64) } },
          assetsDir: fixture.assetsDir
        }, fixture.imageDir))
        assert.strictEqual(error.asset, "kernel")
        assert.include(error.message, url)
        assert.include(error.message, "ECONNREFUSED")
        assert.deepStrictEqual(yield* fixture.cacheEntries, [])
      }))

    it.scoped("a malformed sha256 fails before any request", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        for (const bad of ["abc", "g".repeat(64), `${"a".repeat(64)} `]) {
          const error = yield* expectAssetError(internal.resolve({
            assets: { wasm: { url: server.url("/v86.wasm"), sha256: bad } },
            assetsDir: fixture.assetsDir
          }, fixture.imageDir))
          assert.strictEqual(error.asset, "wasm")
          assert.include(error.message, "64 hex characters")
        }
        assert.strictEqual(server.requests(), 0)
      }))

    it.scoped("an interrupted download leaves no partial file", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        const server = yield* serveDirectory(fixture.servedDir)
        const kernel = new Uint8Array(randomBytes(500_000))
        yield* fixture.serve("bzImage", kernel)
        const started = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(internal.resolve({
          assets: { kernel: { url: server.url("/stall/bzImage"), sha256: sha256(kernel) } },
          assetsDir: fixture.assetsDir,
          onProgress: () => Deferred.unsafeDone(started, Exit.void)
        }, fixture.imageDir))
        yield* Deferred.await(started)
        // the partial file exists while the download hangs
        assert.strictEqual((yield* fixture.cacheEntries).length, 1)
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(yield* fixture.cacheEntries, [])
      }))
  })

  describe("the real bundled image", () => {
    it.scoped("matches its manifest, resolves offline, and downloads byte-identically over HTTP", () =>
      Effect.gen(function*() {
        const fixture = yield* makeFixture
        yield* Assets.verifyBundled
        const manifest = yield* Assets.readManifest()
        const resolved = yield* Assets.resolve({ assetsDir: fixture.assetsDir })
        const bundled = ["kernel", "initrd", "bios", "vgaBios"] as const
        for (const name of bundled) assert.strictEqual(resolved[name]?.length, manifest.files[name]?.size)
        const rootfs = manifest.files.rootfs
        if (rootfs !== undefined) {
          assert.strictEqual(resolved.rootfs?.byteLength, rootfs.unpacked?.size ?? rootfs.size)
          assert.strictEqual(resolved.rootfs?.sha256, rootfs.unpacked?.sha256 ?? rootfs.sha256)
        }
        assert.isTrue(resolved.initrd !== undefined || resolved.rootfs !== undefined, "the image boots from something")
        assert.isAtLeast(resolved.memoryMB, 64)

        const server = yield* serveDirectory(Assets.bundledAssetsDir)
        const kernel = manifest.files.kernel
        const downloaded = yield* Assets.resolve({
          assets: { kernel: { url: server.url(`/${kernel.path}`), sha256: kernel.sha256 } },
          assetsDir: fixture.assetsDir
        })
        assert.deepStrictEqual(downloaded.kernel, resolved.kernel)
        assert.strictEqual(downloaded.fingerprint, resolved.fingerprint)
        assert.strictEqual(server.requests(), 1)
      }))

    it.effect("resolveNode needs no layers from the caller", () =>
      Effect.gen(function*() {
        const resolved = yield* Assets.resolveNode()
        assert.isAbove(resolved.kernel.length, 0)
      }))
  })
})
