/**
 * The Promise API, for code outside Effect, against a live VM.
 */
import { describe, expect, it } from "vitest"
import { CommandTimeout, InvalidOptions, V86Box } from "../src/index.ts"

describe("V86Box.open", () => {
  it("runs commands, reports status, rejects with tagged errors, and closes", async () => {
    await using box = await V86Box.open()
    expect(await box.exec("echo hi; echo err >&2; exit 4")).toEqual({ exitCode: 4, stdout: "hi\n", stderr: "err\n" })
    expect((await box.status()).ready).toBe(true)

    const timedOut = await box.exec("sleep 100", { timeout: "1 second" }).catch((error: unknown) => error)
    expect(timedOut).toBeInstanceOf(CommandTimeout)

    const controller = new AbortController()
    setTimeout(() => controller.abort(), 500)
    const abortedRun = box.exec("sleep 99", { signal: controller.signal }).then(
      () => "finished",
      () => "rejected"
    )
    expect(await abortedRun).toBe("rejected")
    expect((await box.exec("pgrep -f 'sleep 9[9]'; echo $?")).stdout).toBe("1\n")

    const invalid = await box.exec("true", { timeout: "soon" as never }).catch((error: unknown) => error)
    expect(invalid).toBeInstanceOf(InvalidOptions)
    await box.close()
    await box.close()
  }, 120_000)

  it("a failed open rejects with the tagged error", async () => {
    const error = await V86Box.open({ memoryMB: 1 }).catch((failure: unknown) => failure)
    expect(error).toBeInstanceOf(InvalidOptions)
  })
})
