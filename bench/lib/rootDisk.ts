/**
 * The bundled root disk for benchmarks that start v86 themselves: the image ships it
 * brotli-compressed, and the SDK unpacks it once into its assets dir (~/.v86box/disks/).
 */
import * as Effect from "effect/Effect"
import * as Assets from "../../src/Assets.ts"

/** The unpacked disk's path, unpacking it first if this machine has not yet. */
export const bundledRootDiskPath = async (): Promise<string> => {
  const resolved = await Effect.runPromise(Assets.resolveNode())
  if (resolved.rootfs === undefined) throw new Error("the bundled image has no root disk")
  return resolved.rootfs.path
}
