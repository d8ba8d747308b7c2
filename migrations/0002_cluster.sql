-- 0002_cluster: what replicas on one database share so that they behave as ONE
-- client of each provider (docs/cluster.md).
--
-- Three tables, all keyed so that they stay tiny:
--   ev_cluster_replicas  the registry: one row per running `serve`;
--   ev_provider_rate     one GCRA row per provider: the cluster-wide request grid,
--                        advanced atomically by ev_rate_reserve() on the database
--                        clock, and the daily request count;
--   ev_provider_state    one row per provider: breaker, pause, disabled; every
--                        change is announced on the channel ev_provider_state.
-- Concurrency caps use no table: a call holds a session advisory lock
-- (class ev_slot_class(provider), object 0..cap-1) on its replica's
-- coordination connection, so a dead replica's slots come back as soon as
-- Postgres drops its session.
--
-- A replica of the previous version ignores all of this (it keeps its
-- process-local limits); nothing here changes a table it uses.

create table ev_cluster_replicas (
    id           text primary key,           -- the replica's lease owner id
    host         text not null,
    pid          int not null,
    version      text not null,
    started_at   timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    -- The backend pid of the replica's coordination session (its slot locks).
    coord_pid    int
);

create table ev_provider_rate (
    provider        text primary key,
    -- The configured ceiling: *_RPM_LIMIT x safety factor of the last replica
    -- that started (0 = no rate limit).
    ceiling_per_min double precision not null default 0 check (ceiling_per_min >= 0),
    -- The rate in force, at most the ceiling. An adaptive controller lowers
    -- and raises it with ev_rate_set(); a changed ceiling resets it.
    rate_per_min    double precision not null default 0 check (rate_per_min >= 0),
    burst           int not null default 1 check (burst >= 1),
    -- Theoretical arrival time: the next free slot of the grid is
    -- greatest(now, tat - (burst - 1) x interval, pause_until).
    tat             timestamptz not null default '-infinity',
    pause_until     timestamptz not null default '-infinity',
    -- Daily request cap (0 = none), counted per provider day in day_tz.
    rpd_limit       bigint not null default 0 check (rpd_limit >= 0),
    day_tz          text not null default 'UTC',
    day             date,
    day_count       bigint not null default 0,
    granted         bigint not null default 0,
    updated_at      timestamptz not null default now()
);

create table ev_provider_state (
    provider        text primary key,
    breaker         text not null default 'closed'
                    check (breaker in ('closed', 'open', 'half_open')),
    breaker_reason  text,
    -- While breaker <> 'closed': no call before open_until, then ONE probe
    -- cluster-wide (probe_owner) until it reports or probe_until passes.
    open_until      timestamptz not null default '-infinity',
    probe_owner     text,
    probe_until     timestamptz not null default '-infinity',
    pause_until     timestamptz not null default '-infinity',
    pause_reason    text,
    disabled        boolean not null default false,
    disabled_reason text,
    generation      bigint not null default 0,
    updated_by      text,
    updated_at      timestamptz not null default now()
);

insert into ev_provider_rate (provider, day_tz) values
    ('gemini', 'America/Los_Angeles'), ('groq', 'UTC');
insert into ev_provider_state (provider) values ('gemini'), ('groq');

create function ev_provider_state_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('ev_provider_state', new.provider);
    return null;
end
$$;

create trigger ev_provider_state_changed
    after insert or update on ev_provider_state
    for each row execute function ev_provider_state_notify();

-- The advisory-lock class of a provider's concurrency slots ("ev" << 16 | n).
create function ev_slot_class(p text) returns int
language sql immutable as $$
    select 1702232064 + case p when 'gemini' then 1 when 'groq' then 2 else 99 end
$$;

-- Takes one free slot of p among 0..cap-1, skipping those this session already
-- holds (advisory locks are re-entrant per session). Returns it, or -1.
create function ev_slot_try(p text, cap int, held int[]) returns int
language plpgsql as $$
declare
    cls int := ev_slot_class(p);
begin
    for s in 0 .. cap - 1 loop
        if not (s = any (held)) and pg_try_advisory_lock(cls, s) then
            return s;
        end if;
    end loop;
    return -1;
end
$$;

-- One slot of the cluster-wide grid of provider p. `max_wait` (seconds, < 0:
-- no limit) refuses a slot further away than that without reserving it.
-- `extra` charges calls a replica made from its share while the database was
-- unreachable: they are placed on the grid from one minute back (an RPM
-- window), so they delay new slots only if the cluster really used more than
-- its rate; they are charged even when the slot itself is refused. Returns ok
-- (granted), the wait until the slot in seconds on the database clock, why it
-- was refused ('wait', 'daily') and the slot itself (database time).
create function ev_rate_reserve(p text, max_wait double precision, extra int default 0)
returns table (ok boolean, wait_s double precision, why text, slot_at timestamptz)
language plpgsql as $$
declare
    r ev_provider_rate%rowtype;
    now_ts timestamptz;
    t interval;
    slot timestamptz;
    today date;
begin
    select * into r from ev_provider_rate where provider = p for update;
    if not found then
        return query select false, 0::float8, 'unknown'::text, null::timestamptz;
        return;
    end if;
    -- Read after the row lock: a clock read while queueing for it would be stale.
    now_ts := clock_timestamp();
    today := (now_ts at time zone r.day_tz)::date;
    if r.day is distinct from today then
        r.day := today;
        r.day_count := 0;
    end if;
    r.day_count := r.day_count + greatest(extra, 0);
    r.granted := r.granted + greatest(extra, 0);
    if r.rate_per_min > 0 then
        -- The interval is rounded up to whole microseconds: never faster than the rate.
        t := make_interval(secs => ceil(60e6 / r.rate_per_min) / 1e6);
        if extra > 0 then
            r.tat := greatest(r.tat, now_ts - interval '1 minute') + extra * t;
        end if;
        slot := greatest(now_ts, r.tat - (r.burst - 1) * t, r.pause_until);
    else
        slot := greatest(now_ts, r.pause_until);
    end if;
    if r.rpd_limit > 0 and r.day_count >= r.rpd_limit then
        update ev_provider_rate set tat = r.tat, day = r.day, day_count = r.day_count,
               granted = r.granted where provider = p;
        return query select false,
            extract(epoch from ((today + 1)::timestamp at time zone r.day_tz) - now_ts)::float8,
            'daily'::text, null::timestamptz;
        return;
    end if;
    if max_wait >= 0 and slot - now_ts > make_interval(secs => max_wait) then
        update ev_provider_rate set tat = r.tat, day = r.day, day_count = r.day_count,
               granted = r.granted where provider = p;
        return query select false, extract(epoch from slot - now_ts)::float8, 'wait'::text, slot;
        return;
    end if;
    update ev_provider_rate
       set tat = case when r.rate_per_min > 0 then greatest(r.tat, slot) + t else r.tat end,
           day = r.day, day_count = r.day_count + 1, granted = r.granted + 1
     where provider = p;
    return query select true, extract(epoch from slot - now_ts)::float8, 'ok'::text, slot;
end
$$;

-- No slot of p before now + secs; the burst is drained so the first slot after
-- the pause is its end. A pause never shortens a longer one.
create function ev_rate_pause(p text, secs double precision) returns void
language plpgsql as $$
declare
    until_ts timestamptz := clock_timestamp() + make_interval(secs => secs);
begin
    update ev_provider_rate
       set pause_until = greatest(pause_until, until_ts),
           tat = case when rate_per_min > 0
                      then greatest(tat, until_ts + (burst - 1)
                                         * make_interval(secs => ceil(60e6 / rate_per_min) / 1e6))
                      else tat end,
           updated_at = now()
     where provider = p;
end
$$;
