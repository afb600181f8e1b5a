/**
 * A real HTTP server on 127.0.0.1 (random port) for download tests. It serves the
 * files of one directory and a few fault paths, and counts the requests it gets:
 *
 * - `/<name>`: the file `<dir>/<name>`, with Content-Length, written in 64 KiB pieces
 * - `/status/<code>`: an empty response with that status
 * - `/redirect/<name>`: a 302 to `/<name>`
 * - `/stall/<name>`: headers and the first 64 KiB of the file, then nothing until closed
 */
import * as Effect from "effect/Effect"
import { readFile } from "node:fs/promises"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"

export interface FileServer {
  /** The URL of a path on this server, e.g. `url("/bzImage")`. */
  readonly url: (path: string) => string
  /** How many requests the server has received so far. */
  readonly requests: () => number
}

const pieceBytes = 64 * 1024

const writeInPieces = (response: Http.ServerResponse, bytes: Uint8Array, limit: number): void => {
  for (let offset = 0; offset < Math.min(bytes.length, limit); offset += pieceBytes) {
    response.write(bytes.subarray(offset, Math.min(offset + pieceBytes, limit)))
  }
}

const handle = async (dir: string, request: Http.IncomingMessage, response: Http.ServerResponse) => {
  const path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname)
  const status = /^\/status\/(\d{3})$/.exec(path)
  if (status) {
    response.writeHead(Number(status[1])).end()
    return
  }
  const redirect = /^\/redirect(\/.+)$/.exec(path)
  if (redirect) {
    response.writeHead(302, { location: redirect[1] }).end()
    return
  }
  const stall = /^\/stall(\/.+)$/.exec(path)
  const name = stall ? stall[1]! : path
  const bytes = await readFile(join(dir, name)).catch(() => undefined)
  if (bytes === undefined) {
    response.writeHead(404).end()
    return
  }
  response.writeHead(200, { "content-length": bytes.length, "content-type": "application/octet-stream" })
  if (stall) {
    writeInPieces(response, bytes, pieceBytes)
    return
  }
  writeInPieces(response, bytes, bytes.length)
  response.end()
}

/** Serves `dir` until the scope closes; closing drops open (stalled) connections. */
export const serveDirectory = (dir: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly server: Http.Server; readonly counter: { count: number } }>((resume) => {
      const counter = { count: 0 }
      const server = Http.createServer((request, response) => {
        counter.count += 1
        handle(dir, request, response).catch(() => response.destroy())
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, counter })))
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(
    Effect.map(({ counter, server }): FileServer => {
      const { port } = server.address() as AddressInfo
      return {
        url: (path) => `http://127.0.0.1:${port}${path}`,
        requests: () => counter.count
      }
    })
  )

/** A URL on 127.0.0.1 where nothing listens: a port that was just free. */
export const refusedUrl = (path: string) =>
  Effect.async<string>((resume) => {
    const server = Http.createServer()
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resume(Effect.succeed(`http://127.0.0.1:${port}${path}`)))
    })
  })
