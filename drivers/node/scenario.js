'use strict'
// The driver scenario with node-postgres `pg` (one Client per scenario client, all in one event loop).
//
// Named queries (`name:`) make every repeated statement a server-side prepared statement that pg
// parses once per connection and then only binds. Connects with the PGHOST, PGPORT, PGUSER,
// PGDATABASE environment. Exits 1 with FAIL lines on any mismatch, 0 with a one-line summary.
// See docs/drivers.md.

const fs = require('node:fs')
const path = require('node:path')
const { isDeepStrictEqual } = require('node:util')
const { pipeline } = require('node:stream/promises')
const { Readable } = require('node:stream')
const pg = require('pg')
const { from: copyFrom, to: copyTo } = require('pg-copy-streams')

const CLIENTS = Number(process.env.DRIVER_CLIENTS || 50)
const ROUNDS = Number(process.env.DRIVER_ROUNDS || 30)
const LISTEN_CHANNEL = 'drivers_events'
const COPY_ROWS = 200

// Dates stay text: pg's default turns a date into a JavaScript Date at local midnight.
pg.types.setTypeParser(1082, (text) => text)

// A statement every driver runs, from drivers/sql/NAME.sql (comment lines left out).
function statement (name) {
  const text = fs.readFileSync(path.join(__dirname, '..', 'sql', `${name}.sql`), 'utf8')
  return text.split('\n').filter((line) => !line.startsWith('--')).join('\n').trim()
}

const ROUNDTRIP_SQL = statement('roundtrip')
const SESSION_SQL = statement('session')
const DIVIDE_SQL = 'SELECT 10 / $1::int4 AS quotient'

class Mismatch extends Error {}

function check (c, what, expected, got) {
  if (!isDeepStrictEqual(expected, got)) {
    throw new Mismatch(`client ${c}: ${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`)
  }
}

function zone (c, second) {
  const hours = ((c + (second ? 11 : 0)) % 27) - 12
  if (hours === 0) return ['Etc/GMT', 0]
  // POSIX sign convention: Etc/GMT-5 is five hours EAST of UTC.
  return [`Etc/GMT${hours > 0 ? '-' : '+'}${Math.abs(hours)}`, hours * 3600]
}

const hex = (n, width) => n.toString(16).padStart(width, '0')

// The parameters of round r of client c, and what the server must say about them.
function values (c, r) {
  const v = {}
  v.i4 = c * 1000 + r
  v.i8 = 4000000000000000000n + BigInt(c * 1000 + r)
  const whole = 1000000000000n * BigInt(c + 1) + BigInt(r)
  v.num = `${whole}.25`
  v.txt = `c${c} r${r} 'single' "double" \\back ü ✓`
  v.flag = (c + r) % 2 === 0
  v.tsMs = 1700000000000 + c * 86400123 + r * 1001
  v.days = c * 10 + r
  v.day = new Date(Date.UTC(2000, 0, 1 + v.days)).toISOString().slice(0, 10)
  v.uuid = `${hex(c, 8)}-${hex(r, 4)}-4000-8000-${hex(c * r, 12)}`
  v.doc = { k: `c${c}-r${r}`, n: [c, r, null], nested: { t: true } }
  v.raw = Buffer.from([c, r, 0, 255, 39, 92, 10])
  v.ints = [c, r, -1, 2147483647]
  v.texts = ['alpha', 'b c', 'q"uote', 'back\\slash', '', 'NULL', `c${c}r${r}`, 'ü']
  v.digest = [
    String(v.i4 + 1), String(v.i8 * 2n), String(whole * 4n + 1n), String(v.txt.length),
    v.flag ? 'f' : 't', String(v.tsMs), String(v.days), v.uuid, `c${c}-r${r}`, v.raw.toString('hex'),
    v.ints.join(','), v.texts.join(','), 't'
  ].join('|')
  return v
}

function copyLabel (c, i) {
  return i % 10 === 0 ? null : `c${c}-r${i}\tü`
}

// The rows in COPY text format: what goes in, and what must come back out.
function copyText (c) {
  let text = ''
  for (let i = 1; i <= COPY_ROWS; i++) {
    const label = copyLabel(c, i)
    text += `${i}\t${label === null ? '\\N' : label.replace(/\\/g, '\\\\').replace(/\t/g, '\\t')}\n`
  }
  return text
}

class ScenarioClient {
  constructor (c, listener) {
    this.c = c
    this.listener = listener
    this.zone = zone(c, false)
    this.reportedTimeZone = null
    this.notifications = []
    this.client = new pg.Client({ application_name: `drivers-node-${c}` })
  }

  async run () {
    const { c, client } = this
    client.on('notification', (msg) => this.notifications.push(msg))
    await client.connect()
    client.connection.on('parameterStatus', (msg) => {
      if (msg.parameterName === 'TimeZone') this.reportedTimeZone = msg.parameterValue
    })
    try {
      await client.query(`SET search_path TO client_${c}, public`)
      await this.setZone(false)
      if (c === 0) {
        await client.query(`LISTEN ${LISTEN_CHANNEL}`)
        this.listener.ready()
      } else {
        await this.listener.wait()
      }
      for (let r = 0; r < ROUNDS; r++) await this.round(r)
      if (c === 0) {
        await this.awaitNotifications()
      } else {
        await client.query(`NOTIFY ${LISTEN_CHANNEL}, 'client-${c}'`)
      }
    } finally {
      await client.end()
    }
  }

  async setZone (second) {
    this.zone = zone(this.c, second)
    await this.client.query(`SET TimeZone TO '${this.zone[0]}'`)
  }

  async round (r) {
    if (r === Math.floor(ROUNDS / 2)) await this.setZone(true)
    if (r === 7) await this.errorAndRecovery()
    else if (r === 13) await this.cancel()
    else if (r % 10 === 5) await this.copy()
    if (r % 3 === 2) {
      await this.statements(r, `round ${r} (autocommit)`)
    } else {
      await this.client.query('BEGIN')
      await this.statements(r, `round ${r}`)
      await this.client.query('COMMIT')
    }
  }

  // Both statements of a round, in an order that differs between clients (as in every program).
  async statements (r, when) {
    if ((this.c + r) % 2) {
      await this.checkSession(when)
      await this.roundtrip(r)
    } else {
      await this.roundtrip(r)
      await this.checkSession(when)
    }
  }

  async roundtrip (r) {
    const { c } = this
    const v = values(c, r)
    const params = [v.i4, String(v.i8), v.num, v.txt, v.flag, new Date(v.tsMs), v.day, v.uuid,
      JSON.stringify(v.doc), v.raw, v.ints, v.texts, null]
    const { rows } = await this.client.query({ name: 'roundtrip', text: ROUNDTRIP_SQL, values: params })
    const row = rows[0]
    check(c, `round ${r} digest`, v.digest, row.digest)
    const expected = {
      i4: v.i4, i8: String(v.i8), num: v.num, txt: v.txt, flag: v.flag, ts: v.tsMs, day: v.day,
      id: v.uuid, doc: v.doc, raw: v.raw, ints: v.ints, texts: v.texts, nothing: null
    }
    const got = { ...row, ts: row.ts instanceof Date ? row.ts.getTime() : row.ts }
    for (const [name, value] of Object.entries(expected)) check(c, `round ${r} ${name}`, value, got[name])
  }

  async checkSession (when) {
    const { c } = this
    const { rows } = await this.client.query({ name: 'session', text: SESSION_SQL })
    const row = rows[0]
    check(c, `${when}: search_path`, `client_${c}, public`, row.search_path)
    check(c, `${when}: TimeZone`, this.zone[0], row.time_zone)
    check(c, `${when}: UTC offset of now()`, this.zone[1], row.utc_offset)
    check(c, `${when}: owner of the table \`mine\``, c, row.owner)
    check(c, `${when}: TimeZone reported by ParameterStatus`, this.zone[0], this.reportedTimeZone)
  }

  async expectError (sql, code, what) {
    try {
      await this.client.query(sql)
    } catch (e) {
      if (e.code === code) return e
      throw new Mismatch(`client ${this.c}: ${what}: expected SQLSTATE ${code}, got ${e.code}: ${e.message}`)
    }
    throw new Mismatch(`client ${this.c}: ${what} did not fail`)
  }

  async errorAndRecovery () {
    const { c, client } = this
    await client.query('BEGIN')
    await this.expectError({ name: 'divide', text: DIVIDE_SQL, values: [0] }, '22012', '10 / 0')
    await this.expectError('SELECT 1', '25P02', 'a statement after an error inside BEGIN')
    await client.query('ROLLBACK')
    const { rows } = await client.query({ name: 'divide', text: DIVIDE_SQL, values: [2] })
    check(c, '10 / 2 after ROLLBACK', 5, rows[0].quotient)
    await this.checkSession('after ROLLBACK')
  }

  async cancel () {
    const { c, client } = this
    await client.query('BEGIN')
    // A cancel that never arrives ends here after 10 s instead of 30, with another message.
    await client.query("SET LOCAL statement_timeout = '10s'")
    const query = new pg.Query('SELECT pg_sleep(30)')
    const finished = new Promise((resolve, reject) => {
      query.on('error', reject)
      query.on('end', resolve)
    })
    client.query(query)
    const started = Date.now()
    let cancelledAt = null
    const timer = setTimeout(() => {
      cancelledAt = Date.now()
      new pg.Client().cancel(client, query)
    }, 200)
    try {
      await finished
      throw new Mismatch(`client ${c}: pg_sleep(30) was not cancelled`)
    } catch (e) {
      if (e instanceof Mismatch) throw e
      const elapsed = (Date.now() - started) / 1000
      if (e.code !== '57014' || !/user request/.test(e.message) || elapsed > 5) {
        throw new Mismatch(`client ${c}: cancel: after ${elapsed.toFixed(1)}s got ${e.code}: ${e.message}`)
      }
    } finally {
      clearTimeout(timer)
    }
    if (cancelledAt === null) throw new Mismatch(`client ${c}: pg_sleep(30) was cancelled before its own cancel request was sent: a cancel meant for another client's query reached this client's server`)
    await client.query('ROLLBACK')
    await this.checkSession('after a cancelled query')
  }

  async copy () {
    const { c, client } = this
    const text = copyText(c)
    await client.query('BEGIN')
    await client.query(`DELETE FROM client_${c}.items`)
    await pipeline(Readable.from([Buffer.from(text)]), client.query(copyFrom(`COPY client_${c}.items (id, label) FROM STDIN`)))
    const chunks = []
    const out = client.query(copyTo(`COPY (SELECT id, label FROM client_${c}.items ORDER BY id) TO STDOUT`))
    for await (const chunk of out) chunks.push(chunk)
    await client.query('COMMIT')
    check(c, 'COPY out of the rows copied in', text, Buffer.concat(chunks).toString())
  }

  async awaitNotifications () {
    const expected = new Set()
    for (let k = 1; k < CLIENTS; k++) expected.add(`client-${k}`)
    const deadline = Date.now() + 30000
    while (this.notifications.length < expected.size && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const seen = new Set()
    for (const n of this.notifications) {
      check(this.c, 'notification channel', LISTEN_CHANNEL, n.channel)
      if (seen.has(n.payload)) throw new Mismatch(`client 0: notification '${n.payload}' delivered twice`)
      seen.add(n.payload)
    }
    const missing = [...expected].filter((p) => !seen.has(p))
    if (missing.length) throw new Mismatch(`client 0: no NOTIFY received from ${missing.join(', ')} within 30 s`)
  }
}

function listenerGate () {
  let ready
  const promise = new Promise((resolve) => { ready = resolve })
  return {
    ready,
    wait: () => Promise.race([
      promise,
      new Promise((resolve, reject) => setTimeout(() => reject(new Mismatch('the listening client never got ready')), 60000).unref())
    ])
  }
}

async function main () {
  const started = Date.now()
  const watchdog = setTimeout(() => {
    console.error('FAIL: node-postgres: the scenario did not finish within 150 s')
    process.exit(1)
  }, 150000)
  const listener = listenerGate()
  const failures = []
  await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    try {
      await new ScenarioClient(c, listener).run()
    } catch (e) {
      failures.push(e instanceof Mismatch ? e.message : `client ${c}: ${e.code || e.name}: ${e.message}`)
    } finally {
      if (c === 0) listener.ready()
    }
  }))
  clearTimeout(watchdog)
  const version = require('pg/package.json').version
  if (failures.length) {
    for (const f of failures.slice(0, 10)) console.log(`FAIL: ${f}`)
    console.error(`FAIL: node-postgres ${version}: ${failures.length} of ${CLIENTS} clients failed`)
    process.exit(1)
  }
  console.log(`node-postgres ${version}: OK: ${CLIENTS} clients x ${ROUNDS} rounds of named prepared statements ` +
    '(text results), COPY in/out, error recovery, cancel, per-client search_path/TimeZone, ' +
    `${CLIENTS - 1} notifications in ${((Date.now() - started) / 1000).toFixed(1)}s`)
}

main().catch((e) => {
  console.error(`FAIL: node-postgres: ${e.stack || e}`)
  process.exit(1)
})
