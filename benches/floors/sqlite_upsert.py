"""The floor for alert intake on SQLite: SQLite's own cost for opsbot's alert upsert (the
schema of migrations/sqlite/0003_alerts.sql, 100 alerts per statement and commit, WAL,
synchronous=NORMAL, rows like benches/alert_load.rs sends), driven from Python's sqlite3 so
no HTTP, JSON parsing or Rust code is involved. Variants: base (as opsbot), noidx (without
the two secondary indexes), cache (a 64 MiB page cache), off (synchronous=OFF).

    python3 benches/floors/sqlite_upsert.py [base|noidx|cache|off]
"""
import sqlite3, time, os, tempfile, resource, json, sys
variant=sys.argv[1] if len(sys.argv) > 1 else 'base'
d=tempfile.mkdtemp()
c=sqlite3.connect(os.path.join(d,'t.db'), isolation_level=None)
c.execute('pragma journal_mode=wal'); c.execute('pragma synchronous=normal')
if variant=='cache': c.execute('pragma cache_size=-65536')
if variant=='off': c.execute('pragma synchronous=off')
for stmt in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../migrations/sqlite/0003_alerts.sql')).read().split(';'):
    if not stmt.strip(): continue
    if variant=='noidx' and 'CREATE INDEX' in stmt: continue
    c.execute(stmt)
n=100000
rows=[]
for i in range(n):
    g=i%100
    labels=json.dumps({"alertname":f"LoadTest{g}","severity":"warning","instance":f"host-{i}:9100","job":"node","service":f"svc-{g}","team":"sre"},sort_keys=True)
    ann=json.dumps({"summary":f"load test alert {i} in group {g}","description":"x"*200},sort_keys=True)
    rows.append((f"am:{i:016x}","alertmanager",f"{{}}:{{alertname=\"LoadTest{g}\"}}","firing",labels,ann,i,None,"http://prom/graph",i,i))
cols="fingerprint, source, group_key, status, labels, annotations, starts_at, ends_at, generator_url, first_seen, last_seen"
one="("+",".join("?"*11)+")"
sql=f"INSERT INTO alerts ({cols}) VALUES "+",".join([one]*100)+" ON CONFLICT (fingerprint) DO UPDATE SET status=excluded.status, labels=excluded.labels, annotations=excluded.annotations, ends_at=excluded.ends_at, last_seen=excluded.last_seen"
order=sorted(range(n), key=lambda i:(i%100, i))
flat=[]
for k in range(0,n,100):
    batch=sorted((rows[j] for j in order[k:k+100]), key=lambda r:r[0])
    flat.append([x for r in batch for x in r])
r0=resource.getrusage(resource.RUSAGE_SELF); t=time.perf_counter()
for p in flat: c.execute(sql,p)
r1=resource.getrusage(resource.RUSAGE_SELF)
cpu=(r1.ru_utime-r0.ru_utime)+(r1.ru_stime-r0.ru_stime)
print(f'{variant:6} {cpu/n*1e6:5.1f} us CPU/alert ({n/cpu:6.0f} alerts per CPU-s), wall {n/(time.perf_counter()-t):6.0f}/s; load {os.getloadavg()[0]:.1f}')
