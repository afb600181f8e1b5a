/**
 * Files, stdin, environment and users replayed from transcripts/files.ndjson: the same
 * suites as the live file, through the real agent client, service and filesystem, without a VM.
 */
import { layer } from "@effect/vitest"
import * as Layer from "effect/Layer"
import * as GuestFileSystem from "../src/GuestFileSystem.ts"
import { Testkit } from "../testkit/index.ts"
import { environmentSuite, filesSuite, stdinSuite } from "./suites/files.ts"

const sandbox = Layer.provideMerge(GuestFileSystem.layer, Testkit.layer("transcripts/files.ndjson"))

layer(sandbox, { timeout: "120 seconds" })("files, stdin, env and users replayed", (it) => {
  filesSuite(it)
  stdinSuite(it)
  environmentSuite(it)
})
