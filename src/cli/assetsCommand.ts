/**
 * `v86box assets fetch` downloads assets into the cache ahead of time (with a progress
 * bar); `v86box assets verify` checks an image dir against its manifest and the cached
 * downloads against their sha256.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Assets from "../Assets.ts"
import { makeProgressBar, formatBytes } from "./progressBar.ts"
import { assetsDir } from "./sandboxOptions.ts"
import { UsageError } from "./UsageError.ts"

const assetNames = ["kernel", "initrd", "rootfs", "bios", "vgaBios", "wasm"] as const

const decodeSourcesJson = Schema.decodeUnknown(Schema.parseJson(Assets.AssetSources), { errors: "all" })

interface Download {
  readonly asset: Assets.AssetName
  readonly source: { readonly url: string; readonly sha256: string }
}

/** The downloads a sources file asks for; local paths in it need no fetching. */
const readSourcesFile = (file: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(file).pipe(
      Effect.mapError((error) => new UsageError({ reason: `cannot read ${file}: ${error.message}` }))
    )
    const sources = yield* decodeSourcesJson(text).pipe(
      Effect.mapError((error) =>
        new UsageError({
          reason: `${file} is not a v86box assets file ({ "kernel": { "url": …, "sha256": … }, … }):\n` +
            ParseResult.TreeFormatter.formatErrorSync(error)
        })
      )
    )
    const downloads: Array<Download> = []
    for (const asset of assetNames) {
      const source = sources[asset]
      if (source !== undefined && typeof source !== "string") downloads.push({ asset, source })
    }
    if (downloads.length === 0) return yield* new UsageError({ reason: `${file} names no { url, sha256 } asset` })
    return downloads
  })

const fetchCommand = Command.make(
  "fetch",
  {
    asset: Options.choice("asset", assetNames).pipe(
      Options.withDescription("Which asset the --url is (names it in progress and errors)."),
      Options.withDefault("kernel")
    ),
    url: Options.text("url").pipe(Options.withDescription("Where to download one asset from."), Options.optional),
    sha256: Options.text("sha256").pipe(
      Options.withDescription("The sha256 the --url's bytes must have (64 hex characters)."),
      Options.optional
    ),
    sources: Options.file("sources", { exists: "yes" }).pipe(
      Options.withDescription(
        "A JSON file of assets, the shape of the `assets` option: { \"kernel\": { \"url\": …, \"sha256\": … }, … }."
      ),
      Options.optional
    ),
    assetsDir
  },
  (options) =>
    Effect.gen(function*() {
      const downloads: ReadonlyArray<Download> = yield* Option.match(options.sources, {
        onSome: readSourcesFile,
        onNone: () =>
          Option.isSome(options.url) && Option.isSome(options.sha256)
            ? Effect.succeed([{ asset: options.asset, source: { url: options.url.value, sha256: options.sha256.value } }])
            : Effect.fail(new UsageError({ reason: "give --url and --sha256, or --sources FILE" }))
      })
      for (const { asset, source } of downloads) {
        const bar = makeProgressBar()
        const cached = yield* Assets.download(asset, source, {
          assetsDir: Option.getOrUndefined(options.assetsDir),
          onProgress: bar.update
        }).pipe(Effect.ensuring(Effect.sync(bar.done)))
        const how = cached.downloaded ? "downloaded" : "already cached"
        yield* Console.log(`${asset}: ${how}, ${formatBytes(cached.size)}, sha256 ok → ${cached.path}`)
      }
    }).pipe(Effect.provide(Assets.layerNode))
).pipe(
  Command.withDescription(
    "Download assets into the cache (~/.v86box/cache or --assets-dir), checked against their sha256, " +
      "so a sandbox that names the same { url, sha256 } boots offline."
  )
)

const verifyCommand = Command.make(
  "verify",
  {
    imageDir: Options.directory("image-dir", { exists: "yes" }).pipe(
      Options.withDescription("An image dir with a manifest.json (default: the bundled image)."),
      Options.optional
    ),
    assetsDir
  },
  (options) =>
    Effect.gen(function*() {
      const image = yield* Assets.verify(Option.getOrUndefined(options.imageDir))
      const cache = yield* Assets.verifyCache(Option.getOrUndefined(options.assetsDir))
      for (const file of [...image, ...cache]) {
        yield* Console.log(`ok  ${file.asset.padEnd(8)} ${formatBytes(file.size).padStart(10)}  ${file.path}`)
      }
      yield* Console.log(`${image.length} image files and ${cache.length} cached downloads match their sha256`)
    })
).pipe(
  Command.withDescription(
    "Check the image's files (bundled, or --image-dir) against its manifest.json, and every cached download " +
      "against its sha256. Exits 1 naming the first file that does not match."
  )
)

export const assetsCommand = Command.make("assets").pipe(
  Command.withDescription("Fetch or verify the files a sandbox boots from."),
  Command.withSubcommands([fetchCommand, verifyCommand])
)
