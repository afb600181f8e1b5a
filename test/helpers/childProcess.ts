/**
 * Runs a program as a child process and collects what a user would see: its exit code,
 * stdout and stderr, kept apart. A child still running at `timeoutMillis` is killed, so
 * a hung CLI fails its test instead of outliving it.
 */
import { type ChildProcess, spawn } from "node:child_process"

export interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface Running {
  readonly child: ChildProcess
  /** Resolves once stdout has printed `text` (rejects if the child ends first). */
  readonly stdoutIncludes: (text: string) => Promise<void>
  readonly finished: Promise<Finished>
}

export interface RunOptions {
  readonly cwd?: string
  readonly input?: string
  readonly env?: NodeJS.ProcessEnv
  readonly timeoutMillis?: number
}

export const start = (command: string, args: ReadonlyArray<string>, options: RunOptions = {}): Running => {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["pipe", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  const waiters: Array<{ text: string; resolve: () => void }> = []
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk
    for (const waiter of waiters.filter((w) => stdout.includes(w.text))) waiter.resolve()
  })
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk
  })
  if (options.input !== undefined) child.stdin.end(options.input)
  const killTimer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMillis ?? 120_000)
  const finished = new Promise<Finished>((resolve, reject) => {
    child.on("error", reject)
    child.on("close", (code, signal) => {
      clearTimeout(killTimer)
      resolve({ code, signal, stdout, stderr })
    })
  })
  const stdoutIncludes = (text: string) =>
    stdout.includes(text) ? Promise.resolve() : new Promise<void>((resolve, reject) => {
      waiters.push({ text, resolve })
      finished.then((result) =>
        reject(new Error(`the process ended (code ${result.code}) before printing ${JSON.stringify(text)}:\n${result.stdout}\n${result.stderr}`))
      )
    })
  return { child, stdoutIncludes, finished }
}

export const run = (command: string, args: ReadonlyArray<string>, options: RunOptions = {}): Promise<Finished> =>
  start(command, args, { ...options, input: options.input ?? "" }).finished

/** @effect/cli colours its help and errors even in a pipe. */
export const stripAnsi = (text: string): string => text.replace(/\x1b\[[0-9;]*m/g, "")
