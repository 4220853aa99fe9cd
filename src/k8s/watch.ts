// Watch a manifest folder and emit the object set whenever its files change.
//
// fs.watch reports changes quickly but can miss some (editors that rename over
// a file, ConfigMap volumes that swap a symlinked folder, a folder replaced
// under us), so a periodic rescan backs it up. Both paths end in the same
// check: read the files, compare with what was emitted last, emit if they
// differ. Events are debounced so a burst of writes yields one emission.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { listManifestFiles, parseManifests, type LoadResult, type ManifestProblem } from './manifests.js';
import type { Logger } from '../log.js';

export interface ManifestWatcherOptions {
  dir: string;
  /** Quiet time after the last fs event before reading (ms). */
  debounceMs?: number;
  /** Safety-net rescan period (ms). */
  rescanMs?: number;
  log: Logger;
  onChange: (set: LoadResult) => void;
}

export class ManifestWatcher {
  private readonly debounceMs: number;
  private readonly rescanMs: number;
  private watcher: fs.FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private rescan: NodeJS.Timeout | undefined;
  private lastDigest: string | undefined;
  private lastProblems = new Set<string>();
  private scanning: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(private readonly opts: ManifestWatcherOptions) {
    this.debounceMs = opts.debounceMs ?? 100;
    this.rescanMs = opts.rescanMs ?? 2000;
  }

  /** Read the folder once and emit; then watch. Rejects if the folder cannot be read at all. */
  async start(): Promise<LoadResult> {
    const first = await this.read();
    this.lastDigest = first.digest;
    this.report(first.result.problems);
    this.opts.onChange(first.result);
    this.arm();
    this.rescan = setInterval(() => this.scan('rescan'), this.rescanMs);
    return first.result;
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    clearTimeout(this.debounce);
    clearInterval(this.rescan);
  }

  /** Read now (tests, or a caller that knows something changed). Resolves once emitted. */
  async poke(): Promise<void> {
    await this.scan('poke');
  }

  private arm(): void {
    if (this.closed || this.watcher) return;
    try {
      this.watcher = fs.watch(this.opts.dir, { persistent: false }, () => this.schedule());
      this.watcher.on('error', (err) => {
        // The folder went away or was replaced: the rescan re-arms the watch.
        this.opts.log.debug('manifest watch lost', { dir: this.opts.dir, err });
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (err) {
      this.opts.log.warn('cannot watch manifest folder; relying on periodic rescan', { dir: this.opts.dir, err });
    }
  }

  private schedule(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.scan('event'), this.debounceMs);
  }

  private scan(why: string): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.scanning) {
      this.again = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        this.arm();
        let r;
        try {
          r = await this.read();
        } catch (err) {
          this.opts.log.warn('cannot read manifest folder; keeping the last objects', { dir: this.opts.dir, err });
          return;
        }
        if (this.closed || r.digest === this.lastDigest) continue;
        this.lastDigest = r.digest;
        this.opts.log.info('manifests changed', { trigger: why, files: r.result.files.length, services: r.result.services.length, endpointSlices: r.result.endpointSlices.length });
        this.report(r.result.problems);
        this.opts.onChange(r.result);
      } while (this.again && !this.closed);
    })().finally(() => (this.scanning = undefined));
    return this.scanning;
  }

  private async read(): Promise<{ result: LoadResult; digest: string }> {
    const files = await listManifestFiles(this.opts.dir);
    const h = createHash('sha256');
    const contents: Array<{ file: string; text: string }> = [];
    for (const file of files) {
      let text: string;
      try {
        text = await fsp.readFile(path.join(this.opts.dir, file), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      h.update(file).update('\0').update(text).update('\0');
      contents.push({ file, text });
    }
    const parsed = parseManifests(contents);
    return { result: { ...parsed, files: contents.map((c) => c.file) }, digest: h.digest('hex') };
  }

  /** Log each problem once while it persists (not again on every rescan). */
  private report(problems: ManifestProblem[]): void {
    const now = new Set<string>();
    for (const p of problems) {
      const key = `${p.file}#${p.index}: ${p.reason}`;
      now.add(key);
      if (!this.lastProblems.has(key)) this.opts.log.warn('malformed manifest document skipped', { file: p.file, doc: p.index, reason: p.reason });
    }
    this.lastProblems = now;
  }
}
