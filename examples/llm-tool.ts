/**
 * A shell tool for an LLM agent: a command in, a structured result out, with limits.
 * Agent frameworks call a function like `runShell` with the model's arguments and hand
 * the JSON back to the model. Uses the Promise API, so it fits any framework.
 *
 *   npx tsx examples/llm-tool.ts
 */
import { CommandTimeout, OutputLimitExceeded, type PromiseBox, V86Box } from "../src/index.ts"

/** What the model sees: always a result, never an exception. */
export interface ShellToolResult {
  readonly exitCode: number | null
  readonly stdout: string
  readonly stderr: string
  /** Why the sandbox stopped the command, if it did. */
  readonly stopped?: "timeout" | "output limit"
}

const limits = { timeout: "10 seconds", maxOutputBytes: 64 * 1024 } as const

export const runShell = async (box: PromiseBox, command: string): Promise<ShellToolResult> => {
  try {
    const { exitCode, stdout, stderr } = await box.exec(command, limits)
    return { exitCode, stdout, stderr }
  } catch (error) {
    if (error instanceof CommandTimeout) return { exitCode: null, stdout: error.stdout, stderr: error.stderr, stopped: "timeout" }
    if (error instanceof OutputLimitExceeded) {
      return { exitCode: null, stdout: error.stdout, stderr: error.stderr, stopped: "output limit" }
    }
    throw error // the sandbox itself failed (MachineError): the host must deal with that
  }
}

const main = async () => {
  // One sandbox for this conversation. A server that opens one per task would pass
  // `{ standby: true }`: each release then readies the next task's sandbox in the background.
  const box = await V86Box.open()
  try {
    // What a model might ask for, one call at a time.
    for (const command of [
      "printf 'a,1\\nb,2\\n' > data.csv && awk -F, '{s+=$2} END {print s}' data.csv",
      "ls /nonexistent",
      "yes | head -c 1000000",
      "sleep 60"
    ]) {
      const result = await runShell(box, command)
      console.log(JSON.stringify({ command, ...result, stdout: result.stdout.slice(0, 60) }))
    }
  } finally {
    await box.close()
  }
}

main().catch((error) => {
  console.error(String(error))
  process.exit(1)
})
