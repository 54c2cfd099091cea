/*
 * seigo.pml -- a Promela model of seigo's commit + recovery protocol, checked by spin.
 * doc/model.md: what is modelled, what is abstracted away, how to run it, the results.
 *
 * One multi-shard transaction (one gid) over two shards:
 *   shard 0, the DECIDER: the coordinator's local transaction + the seigo_decision row;
 *   shard 1, an XA BRANCH that the coordinator prepares.
 * Processes:
 *   Coordinator  src/core/protocol.cc: Attempt::Commit, Abort, ResolveLostCommit,
 *                Protocol::FinishPhase2, Protocol::TrySettle. Crashes at any step (once); it
 *                comes back without any memory of the gid: with -DTWO_RESOLVERS it then runs a
 *                resolver of its own, next to the first one.
 *   Resolver     src/core/resolver.cc: core::ResolvePass, garbage collection included, with
 *                MariaDbParticipant::FenceAbort's rules (a resolver writes a row only within
 *                [deadline, deadline + 30 s); past that it takes the row, or aborts without
 *                writing one). Crashes at any step (once) and starts over.
 *   Env          the two servers, the clock and the crashes:
 *                - a server runs a request whenever it likes, also after the client gave up on
 *                  the connection (until the server notices the disconnect);
 *                - the decider crashes (once): its uncommitted transaction, with an uncommitted
 *                  decision insert, is gone; committed rows stay;
 *                - the branch server crashes (once): an active branch is gone, a prepared one
 *                  survives, detached from its connection;
 *                - the decider's clock: "deadline passed" and "deadline + 30 s (and the
 *                  retention) passed", monotone flags that flip at any moment.
 * Faults: at most FAULTS per run, of any kind: a process or server crash, a lost reply (the
 * request may have run, may still run, or never will), a call that never reached the server.
 *
 * Properties (a failing check sets the ghost bit named after the property, so that pan's
 * "assertion violated !(P...)" names it):
 *   P1 atomicity: the branch and the decider's local work never end differently -- checked in
 *      every reachable state (process Invariants), and again in final states;
 *   P2 the decision never changes: no commit row ever after an abort row, nor the reverse;
 *   P3 a resolver commits a branch only if a commit row was written; it rolls one back only if
 *      no commit row was ever written and an abort row was, or the window has passed (no row can
 *      be written any more);
 *   P4 no resolver abort row before the deadline (decider's clock);
 *   P5 in every final state (nothing can move any more: the clock is past every bound, the
 *      faults are used up, the resolvers idle) the branch is neither prepared nor active;
 *   P6 what the coordinator reported (committed / did not commit) is what happened;
 *   and spin's own check: no invalid end state (nobody waits forever mid-protocol).
 *
 * Broken variants (each must be caught; run_model.sh, model/CMakeLists.txt):
 *   BROKEN_NO_FENCE                  the resolver rolls back on "no row, deadline passed"
 *                                    without the fencing insert
 *   BROKEN_COMMIT_IGNORES_ROW        the decider's commit insert ignores an existing row
 *                                    (no primary key on gid)
 *   BROKEN_COMMIT_IGNORES_DEADLINE   the decider's commit insert does not check the deadline
 *   BROKEN_RESOLVER_IGNORES_DEADLINE the resolver's fence does not check the deadline
 *   BROKEN_LOST_COMMIT_IS_ABORT      a lost COMMIT reply is taken for "not committed": the
 *                                    coordinator rolls its branch back without fencing
 *   BROKEN_UNKNOWN_KEEPS_BRANCH      when the outcome stays unknown the coordinator keeps (never
 *                                    closes) the connection that owns the prepared branch
 *   BROKEN_GC_READS_ROWS_AFTER_SCAN  garbage collection reads the expired rows after XA RECOVER
 *                                    instead of before it
 *   PRE_FIX_RESOLVER_FENCE           the protocol before commit 20a6a6c: a resolver's fence has
 *                                    no upper time bound (the stale abort row, doc/model.md)
 *   BROKEN_NO_ROWLESS_ABORT          the window without its second half: past the window a
 *                                    resolver finding no row is stuck (busy forever)
 * Other knobs: FAULTS (default 3); TWO_RESOLVERS (the crashed coordinator comes back as a
 * second resolver; with RESOLVER_FROM_START the second one runs from the start instead);
 * NO_GC; P2_ALLOW_STALE_ABORT_ROW (with PRE_FIX_RESOLVER_FENCE: tolerate exactly the stale
 * abort row, to check everything else).
 */

#ifndef FAULTS
#define FAULTS 3
#endif
#define TRIES 2   /* unknown_resolve_tries and phase2_tries (5 in the code; 2 shows a retry) */

/* transaction / branch states */
#define NONE       0
#define ACTIVE     1
#define PREPARED   2
#define COMMITTED  3
#define ROLLEDBACK 4
#define MAYBE      5   /* the coordinator's view only: PREPARE sent, reply lost */

/* a coordinator connection, as the SERVER sees it */
#define C_NONE   0
#define C_LIVE   1   /* the coordinator holds it */
#define C_ORPHAN 2   /* the client dropped it; the server has not noticed yet */
#define C_CLOSED 3   /* gone, or back in the pool with no transaction: it owns nothing */

/* the committed seigo_decision row of the gid */
#define ROW_NONE 0
#define ROW_C    1
#define ROW_A    2

/* requests in flight on the coordinator's sessions */
#define DQ_NONE     0
#define DQ_COMMIT   1  /* decider: "INSERT (gid, IF(now<deadline,'C',NULL));COMMIT" sent */
#define DQ_INSERTED 2  /* ... the insert ran: row written but uncommitted, its lock held */
#define BQ_NONE     0
#define BQ_PREPARE  1  /* branch: "XA END;XA PREPARE" sent */
#define BQ_COMMIT   2  /* XA COMMIT on the owning session (phase 2) */
#define BQ_ROLLBACK 3  /* (XA END;) XA ROLLBACK on the owning session */

/* replies */
#define RP_NONE 0
#define RP_OK   1
#define RP_DUP  2   /* 1062: the gid has a row already */
#define RP_NULL 3   /* 1048: the deadline condition said no */
#define RP_ERR  4   /* XA_RB* or XAER_NOTA */
#define RP_LOST 5   /* client side: the connection failed, outcome unknown */

/* results of a fencing insert, of XA COMMIT / ROLLBACK on a fresh connection */
#define F_COMMIT  1
#define F_ABORT   2
#define F_BUSY    3  /* the row lock is held, or the time condition said no: nothing written */
#define F_UNAVAIL 4
#define X_OK      1
#define X_NOTA    2
#define X_UNAVAIL 3

/* what Protocol::Run returned to the caller */
#define RPT_NONE      0
#define RPT_COMMITTED 1
#define RPT_ABORTED   2   /* kConflict / kAborted / kGaveUp: "did not commit" */
#define RPT_UNKNOWN   3

/* ---------------------------------------------------------------- shared state */
/* shard 0, the decider */
byte d_local = NONE;    /* the decider's local transaction: its share of the closure's work */
byte d_conn  = C_NONE;  /* the coordinator's decider session, server side */
byte d_req   = DQ_NONE;
byte d_reply = RP_NONE;
byte row     = ROW_NONE;
/* shard 1, the XA branch */
byte b_state = NONE;
byte b_conn  = C_NONE;  /* the owning connection, server side */
byte b_req   = BQ_NONE;
byte b_reply = RP_NONE;

/* time, by the decider's clock: the only clock any decision depends on. (Clients' clocks only
 * skip or delay round trips; the model lets those happen at any time instead.) */
bit deadline;    /* now >= deadline */
bit late;        /* now >= deadline + kCoordinatorFenceWindowMs: no more coordinator fences;
                    and now > deadline + decision_retention_ms: the row may be collected.
                    One flag = the tightest legal setting, retention == the 30 s window. */

/* faults: one budget for all; each kind of crash at most once */
byte faults = FAULTS;
bit crash_coord_left = 1, crash_res_left = 1, crash_dsrv_left = 1, crash_bsrv_left = 1;
bit crash_coord, crash_res;  /* set by Env, taken by the victim's `unless` */
bit coord_up, res_busy;      /* the victim is somewhere it can crash */

/* ghosts */
bit ever_C, ever_A;          /* a commit / an abort row was written, at some time */
byte reported = RPT_NONE;
bit P1_atomicity, P2_decision_changed, P3_resolver_without_decision, P4_resolver_abort_early,
    P5_branch_left_in_doubt, P6_wrong_report;

#define FAIL(p)     p = 1; assert(!p)
#define CHECK(c, p) if :: !(c) -> FAIL(p) :: else -> skip fi

/* P1 */
#define ATOMIC_NOW ((b_state != COMMITTED || d_local == COMMITTED) && \
                    (d_local != COMMITTED || b_state != ROLLEDBACK) && \
                    (d_local != ROLLEDBACK || b_state != COMMITTED))
/* P2 is checked where rows are written. Under -DP2_ALLOW_STALE_ABORT_ROW the one exception
 * the protocol had before commit 20a6a6c (doc/model.md, "Finding") is tolerated, but only
 * exactly: an abort row after a commit row once that commit row was garbage-collected and the
 * branch is committed, so that nothing can ever follow it. */
#ifdef P2_ALLOW_STALE_ABORT_ROW
#define ABORT_AFTER_COMMIT_OK (row == ROW_NONE && b_state == COMMITTED)
#else
#define ABORT_AFTER_COMMIT_OK 0
#endif
/* P3: what lets a resolver roll back: an abort row was written, or (since 20a6a6c) "no row and
 * past deadline + window", after which no row is ever written. */
#ifndef PRE_FIX_RESOLVER_FENCE
#define RES_ABORT_DECIDED (ever_A || late)
#else
#define RES_ABORT_DECIDED ever_A
#endif
/* P6 */
#define REPORT_OK ((reported != RPT_COMMITTED || ever_C) && (reported != RPT_ABORTED || !ever_C))

/* Polling. A real resolver runs a pass every second, TrySettle retries every second; a pass
 * over unchanged state does the same thing again. So the model runs one only once something it
 * reads has changed since the previous one STARTED: every change to the branch being prepared
 * or not, to its owning connection being gone, to the decision row, to the decider's row lock
 * or to the clock sets `dirty`, one bit per poller (1: the resolver, 2: the second resolver,
 * 4: the coordinator's TrySettle), which a poller clears as it starts.
 * This turns "polls forever and gets nowhere" into a deadlock, which the final-state check (P5)
 * and spin's end-state check see, and it loses no behaviour: a skipped pass would have read
 * what the previous one read, and every effect of a pass sets `dirty` itself. */
byte dirty = 7;
#define TOUCH dirty = 7

#define DREPLY(x) if :: d_conn == C_LIVE -> d_reply = x :: else -> skip fi
#define BREPLY(x) if :: b_conn == C_LIVE -> b_reply = x :: else -> skip fi

/* ---------------------------------------------------------------- client-side calls */

/* Letting go of a session: a clean one goes back to the pool (it owns nothing any more); a
 * broken or busy one is closed, and the server notices later (Env). */
#define POOL_D() d_conn = C_CLOSED
#define POOL_B() b_conn = C_CLOSED; TOUCH
#define DROP_D() if :: d_conn == C_LIVE -> d_conn = C_ORPHAN :: else -> skip fi
#define DROP_B() if :: b_conn == C_LIVE -> b_conn = C_ORPHAN :: else -> skip fi

/* A request on a coordinator session, then its reply or a failed connection. The server runs
 * the request whenever it likes (Env), also after the client gave up (until it notices). Used
 * for the two requests whose late execution matters: the decider's commit batch and PREPARE. */
inline send_d(q, r) {
  if
  :: d_step { d_conn == C_LIVE -> d_reply = RP_NONE; d_req = q }
     if
     :: d_step { d_reply != RP_NONE -> r = d_reply; d_reply = RP_NONE }
     :: d_step { d_conn == C_CLOSED -> r = RP_LOST }     /* the server crashed */
     :: d_step { faults > 0 -> faults--; r = RP_LOST; d_reply = RP_NONE; DROP_D() }
     fi
  :: d_step { d_conn != C_LIVE -> r = RP_LOST }
  fi
}

inline send_b(q, r) {
  if
  :: d_step { b_conn == C_LIVE -> b_reply = RP_NONE; b_req = q }
     if
     :: d_step { b_reply != RP_NONE -> r = b_reply; b_reply = RP_NONE }
     :: d_step { b_conn == C_CLOSED -> r = RP_LOST }
     :: d_step { faults > 0 -> faults--; r = RP_LOST; b_reply = RP_NONE; DROP_B() }
     fi
  :: d_step { b_conn != C_LIVE -> r = RP_LOST }
  fi
}

/* XA COMMIT / XA ROLLBACK on the owning branch session. While the session is ours nobody else
 * can act on the branch (XAER_NOTA), so a late execution cannot be told from "now" or "never":
 * it runs now and replies, runs now and the reply is lost, or never runs. */
inline own_b(q, r) {
  if
  :: d_step { b_conn == C_LIVE ->
       if
       :: q == BQ_COMMIT && b_state == PREPARED -> b_state = COMMITTED; r = RP_OK; TOUCH
       :: q == BQ_ROLLBACK && (b_state == ACTIVE || b_state == PREPARED) ->
          b_state = ROLLEDBACK; r = RP_OK; TOUCH
       :: else -> r = RP_ERR       /* XAER_NOTA */
       fi }
     if
     :: skip
     :: d_step { faults > 0 -> faults--; r = RP_LOST; DROP_B() }
     fi
  :: d_step { b_conn == C_LIVE && faults > 0 -> faults--; r = RP_LOST; DROP_B() }
  :: d_step { b_conn != C_LIVE -> r = RP_LOST }
  fi
}

/* Participant::FenceAbort, on a fresh connection to the decider: the autocommit
 *   INSERT (gid, IF(<time condition>,'A',NULL), ...)
 * coordinator (by_coord): IF(now < deadline + 30 s);
 * resolver: IF(now >= deadline AND now < deadline + 30 s) (before 20a6a6c: IF(now >= deadline)).
 * The server builds the row first, so a false time condition fails with 1048 (busy) whether or
 * not the gid has a row; then 1062 -> the existing row's outcome (SELECT); the row lock held by
 * the decider's uncommitted insert -> busy (lock-wait timeout). A coordinator's call may never
 * arrive, or its reply may be lost. The resolver calls it right after ReadDecision found no row;
 * the model makes the two one step, so for a resolver an existing row is its outcome whatever
 * the time condition says (whatever happens between the read and the fence, the fence sees it).
 * (A resolver's lost call is the same as its crash at that point.) */
#ifdef BROKEN_RESOLVER_IGNORES_DEADLINE
#define RES_TIME_OK 1
#else
#define RES_TIME_OK deadline
#endif
/* Since commit 20a6a6c (the fix of the stale abort row, doc/model.md "Finding") a resolver's
 * fence writes only while deadline <= now < deadline + kFenceWindowMs; past that it reads the
 * row (a locking read, which waits for an uncommitted insert) and, if there is none, returns
 * abort without writing one. -DPRE_FIX_RESOLVER_FENCE: the fence before that commit. */
#ifdef PRE_FIX_RESOLVER_FENCE
#define RES_WINDOW_OPEN
#else
#define RES_WINDOW_OPEN && !late
#endif
inline fence(by_coord, out) {
  if
  :: d_step { by_coord && faults > 0 -> faults--; out = F_UNAVAIL }   /* never arrived */
  :: d_step {
       if
       :: by_coord && late -> out = F_BUSY      /* 1048: "too long after the deadline" */
       :: else ->
          if
          :: row == ROW_C -> out = F_COMMIT
          :: row == ROW_A -> out = F_ABORT
          :: row == ROW_NONE && d_req == DQ_INSERTED -> out = F_BUSY
          :: row == ROW_NONE && d_req != DQ_INSERTED ->
             if
             :: by_coord || (RES_TIME_OK RES_WINDOW_OPEN) ->
                CHECK(by_coord || deadline, P4_resolver_abort_early);
                CHECK(!ever_C || ABORT_AFTER_COMMIT_OK, P2_decision_changed);
                row = ROW_A; ever_A = 1; out = F_ABORT; TOUCH
#if !defined(PRE_FIX_RESOLVER_FENCE) && !defined(BROKEN_NO_ROWLESS_ABORT)
             :: !by_coord && late -> out = F_ABORT   /* no row, none can come: abort, unwritten */
#endif
             :: else -> out = F_BUSY                  /* 1048: deadline not passed */
             fi
          fi
       fi }
     if
     :: skip
     :: d_step { by_coord && faults > 0 -> faults--; out = F_UNAVAIL }  /* reply lost */
     fi
  fi
}

/* Participant::CommitXid / RollbackXid on a fresh connection to the branch's shard: XAER_NOTA
 * while another connection owns the branch (the MariaDB trap: also while the server has not
 * yet noticed that the owner is gone) or when it is finished. */
inline ext_xa(do_commit, by_res, x) {
  if
  :: d_step { !by_res && faults > 0 -> faults--; x = X_UNAVAIL }
  :: d_step {
       if
       :: b_state == PREPARED && b_conn == C_CLOSED ->
          if
          :: do_commit -> CHECK(!by_res || ever_C, P3_resolver_without_decision);
                          b_state = COMMITTED
          :: else -> CHECK(!by_res || (RES_ABORT_DECIDED && !ever_C), P3_resolver_without_decision);
                     b_state = ROLLEDBACK
          fi;
          x = X_OK; TOUCH
       :: else -> x = X_NOTA
       fi }
     if
     :: skip
     :: d_step { !by_res && faults > 0 -> faults--; x = X_UNAVAIL }
     fi
  fi
}

/* ---------------------------------------------------------------- the resolver */

/* core::ResolvePass, for our one gid. Every read is its own step: other processes move in
 * between, as they do between the real round trips. */
inline resolve_pass() {
  /* 1. garbage candidates, read BEFORE the scan (ListExpiredDecisions, decider's clock) */
#if !defined(NO_GC) && !defined(BROKEN_GC_READS_ROWS_AFTER_SCAN)
  gc_cand = (row != ROW_NONE && late);
#endif
  /* 2. XA RECOVER */
  listed = (b_state == PREPARED);
#ifdef BROKEN_GC_READS_ROWS_AFTER_SCAN
  gc_cand = (row != ROW_NONE && late);
#endif
  /* 3. a listed gid: its decision (ReadDecision sees committed rows only) */
  if
  :: listed ->
     /* ReadDecision, and the fencing insert if there is no row. (The local-clock shortcut
      * "still running" only saves a round trip: not modelled, the fence's check by the
      * decider's clock is what counts.) One step: whatever happens between the read and the
      * fence, the fence sees it (1062 / row lock), so the gap adds no behaviour. */
#ifdef BROKEN_NO_FENCE
     d_step { if :: row == ROW_C -> out = F_COMMIT :: else -> out = F_ABORT fi };
#else
     fence(0, out);
#endif
     if
     :: out == F_COMMIT -> ext_xa(1, 1, x)
     :: out == F_ABORT -> ext_xa(0, 1, x)
     :: else -> skip       /* busy: "pending" */
     fi
  :: else -> skip
  fi;
  /* 4. garbage collection: the rows read in 1 whose gid no shard listed in 2 */
#ifndef NO_GC
  if
  :: gc_cand && !listed -> d_step { row = ROW_NONE; TOUCH }      /* ForgetDecisions */
  :: else -> skip
  fi
#endif
}

/* A resolver: a coordinator's background thread, `seigo recover`, a restarted coordinator.
 * `me`: its bit in `dirty`; only the first one (me == 1) is crashed by Env. */
proctype Resolver(byte me) {
  byte out, x;
  bit listed, gc_cand;
end_res:
  do
  :: d_step { (dirty & me) != 0 -> dirty = dirty & (7 - me); res_busy = (me == 1) }
     {
       resolve_pass()
     } unless {
       atomic { crash_res && me == 1 -> crash_res = 0; dirty = dirty | me }  /* starts over */
     };
     d_step { res_busy = 0; out = 0; x = 0; listed = 0; gc_cand = 0 }
  od
}

/* ---------------------------------------------------------------- the coordinator */

proctype Coordinator() {
  bit db, bb, bb_broken;   /* we hold the decider / branch session; the branch session broke */
  byte bst;                /* our view of the branch: ACTIVE, PREPARED, MAYBE */
  byte r, x, tries;
  bit dec_abort, need_fence, ok;

  {
    /* the closure: START TRANSACTION on the decider, XA START on shard 1, its statements */
    d_step { coord_up = 1; d_local = ACTIVE; d_conn = C_LIVE; b_state = ACTIVE; b_conn = C_LIVE;
             db = 1; bb = 1; bst = ACTIVE }
    if
    :: skip
    :: goto abort   /* the closure or a statement failed, or the local clock says the deadline
                       passed ("reached its deadline before commit"): Abort(false) */
    fi;

    /* XA END + XA PREPARE */
    send_b(BQ_PREPARE, r);
    if
    :: r == RP_OK -> bst = PREPARED
    :: r == RP_LOST -> bst = MAYBE; bb_broken = 1; goto abort
    :: r == RP_ERR -> goto abort          /* XA_RB*: the server rolled the branch back */
    fi;

    /* THE COMMIT POINT: insert the commit row and COMMIT, one round trip */
    send_d(DQ_COMMIT, r);
    if
    :: r == RP_OK -> d_step { db = 0; POOL_D(); reported = RPT_COMMITTED }; goto phase2
    :: r == RP_DUP || r == RP_NULL -> dec_abort = 1; goto abort    /* kAborted */
    :: r == RP_LOST -> skip
    fi;

    /* ResolveLostCommit */
    d_step { db = 0; DROP_D() }
#ifdef BROKEN_LOST_COMMIT_IS_ABORT
    goto abort;
#endif
    tries = 0;
    do
    :: tries < TRIES ->
       tries++;
       fence(1, r);
       if
       :: r == F_COMMIT -> reported = RPT_COMMITTED; goto phase2
       :: r == F_ABORT -> dec_abort = 1; goto abort
       :: else -> skip
       fi
    :: else -> break
    od;
    skip;   /* (a jump may not land on a d_step) */
    /* still unknown: close the branch sessions, so that the server detaches the branch */
#ifndef BROKEN_UNKNOWN_KEEPS_BRANCH
    d_step { bb = 0; DROP_B() }
#endif
    reported = RPT_UNKNOWN;
    /* the background thread: TrySettle every second until the outcome is known or the clock is
     * past deadline + 30 s (each round is followed by a resolver pass: process Resolver) */
    dirty = dirty | 4;
    do
    :: late -> break
    :: d_step { !late && (dirty & 4) != 0 -> dirty = dirty & 3 }
       fence(1, r);
       if
       :: r == F_COMMIT || r == F_ABORT -> break
       :: r == F_UNAVAIL -> dirty = dirty | 4
       :: else -> skip
       fi
    od;
    goto done;

phase2:
    /* Protocol::FinishPhase2: XA COMMIT on the connection that prepared the branch ... */
    own_b(BQ_COMMIT, r);
    if
    :: r == RP_OK -> d_step { bb = 0; POOL_B() }; goto done
    :: else -> d_step { bb = 0; DROP_B() }
    fi;
    /* ... else close it and retry from fresh connections; XAER_NOTA counts as done only once
     * XA RECOVER no longer lists the branch */
    tries = 0;
    do
    :: tries < TRIES ->
       tries++;
       ext_xa(1, 0, x);
       if
       :: x == X_OK -> break
       :: x == X_NOTA ->
          if
          :: d_step { b_state != PREPARED -> CHECK(b_state == COMMITTED, P6_wrong_report) }; break
          :: b_state == PREPARED -> skip
          fi
       :: x == X_UNAVAIL -> skip
       fi
    :: else -> break    /* left to the resolver */
    od;
    goto done;

abort:
    /* Attempt::Abort(dec_abort) */
    need_fence = 0;
    if
    :: db ->   /* ROLLBACK; if that fails the session is closed and the server rolls back */
       d_step { db = 0;
                if
                :: d_conn == C_LIVE ->
                   if :: d_local == ACTIVE -> d_local = ROLLEDBACK :: else -> skip fi; POOL_D()
                :: else -> skip
                fi }
    :: else -> skip
    fi;
    if
    :: bb ->
       if
       :: bb_broken -> r = RP_LOST           /* "connection already lost" */
       :: else -> own_b(BQ_ROLLBACK, r)
       fi;
       ok = (r == RP_OK || r == RP_ERR);     /* XAER_NOTA on rollback: nothing left, OK */
       if
       :: bst != ACTIVE && (!ok || bst == MAYBE) -> need_fence = 1
       :: else -> skip
       fi;
       d_step { bb = 0; if :: ok -> POOL_B() :: else -> DROP_B() fi }
    :: else -> skip
    fi;
    if
    :: need_fence && !dec_abort -> fence(1, r)
    :: else -> skip
    fi;
    if
    :: reported == RPT_NONE -> reported = RPT_ABORTED
    :: else -> skip
    fi;

done:
    coord_up = 0
  } unless {
    /* the process dies: its connections drop (the servers notice later) */
    atomic { crash_coord -> crash_coord = 0; coord_up = 0; DROP_D(); DROP_B();
             d_reply = RP_NONE; b_reply = RP_NONE }
#if defined(TWO_RESOLVERS) && !defined(RESOLVER_FROM_START)
    /* it starts again without any memory of the gid: all it can do about it is resolve */
    run Resolver(2)
#endif
  }
}

/* ---------------------------------------------------------------- servers, clock, crashes */

active proctype Env() {
end_env:
  do
  /* the decider's clock */
  :: d_step { !deadline -> deadline = 1; TOUCH }
  :: d_step { deadline && !late -> late = 1; TOUCH }

  /* decider: the commit batch. The INSERT evaluates IF(now < deadline,'C',NULL); 1062 and
   * 1048 stop the batch before COMMIT. */
  :: d_step { d_req == DQ_COMMIT ->
       if
#ifndef BROKEN_COMMIT_IGNORES_ROW
       :: row != ROW_NONE -> d_req = DQ_NONE; DREPLY(RP_DUP)
#endif
#ifndef BROKEN_COMMIT_IGNORES_DEADLINE
       :: row == ROW_NONE && deadline -> d_req = DQ_NONE; DREPLY(RP_NULL)
#endif
       :: else -> d_req = DQ_INSERTED; TOUCH
       fi }
  :: d_step { d_req == DQ_INSERTED ->      /* COMMIT: the commit point */
       CHECK(!ever_A, P2_decision_changed);
       row = ROW_C; ever_C = 1; d_local = COMMITTED; d_req = DQ_NONE; DREPLY(RP_OK); TOUCH }
  /* it notices a dropped connection: the open transaction and an uncommitted insert vanish */
  :: d_step { d_conn == C_ORPHAN ->
       if :: d_req == DQ_INSERTED -> TOUCH :: else -> skip fi;
       d_conn = C_CLOSED; d_req = DQ_NONE;
       if :: d_local == ACTIVE -> d_local = ROLLEDBACK :: else -> skip fi }
  /* crash + restart: committed rows stay, nothing uncommitted does */
  :: d_step { crash_dsrv_left && faults > 0 -> crash_dsrv_left = 0; faults--;
       if :: d_local == ACTIVE -> d_local = ROLLEDBACK :: else -> skip fi;
       if :: d_req == DQ_INSERTED -> TOUCH :: else -> skip fi;
       d_req = DQ_NONE; d_reply = RP_NONE;
       if :: d_conn == C_LIVE || d_conn == C_ORPHAN -> d_conn = C_CLOSED :: else -> skip fi }

  /* branch server: XA END + XA PREPARE */
  :: d_step { b_req == BQ_PREPARE && b_state == ACTIVE ->
       b_req = BQ_NONE; b_state = PREPARED; BREPLY(RP_OK); TOUCH }
  :: d_step { b_req == BQ_PREPARE && b_state == ACTIVE ->       /* XA_RB*: it rolled back */
       b_req = BQ_NONE; b_state = ROLLEDBACK; BREPLY(RP_ERR) }
  :: d_step { b_req == BQ_PREPARE && b_state != ACTIVE -> b_req = BQ_NONE; BREPLY(RP_ERR) }
  /* it notices a dropped owner: an active branch is rolled back, a prepared one detached */
  :: d_step { b_conn == C_ORPHAN -> b_conn = C_CLOSED; b_req = BQ_NONE; TOUCH;
       if :: b_state == ACTIVE -> b_state = ROLLEDBACK :: else -> skip fi }
  /* crash + restart: a prepared branch survives (detached, locks kept), an active one is gone */
  :: d_step { crash_bsrv_left && faults > 0 -> crash_bsrv_left = 0; faults--;
       if :: b_state == ACTIVE -> b_state = ROLLEDBACK :: else -> skip fi;
       b_req = BQ_NONE; b_reply = RP_NONE;
       if :: b_conn == C_LIVE || b_conn == C_ORPHAN -> b_conn = C_CLOSED; TOUCH :: else -> skip fi }

  /* process crashes, at any step of the victim */
  :: d_step { crash_coord_left && coord_up && faults > 0 ->
       crash_coord_left = 0; faults--; crash_coord = 1 }
  :: d_step { crash_res_left && res_busy && faults > 0 ->
       crash_res_left = 0; faults--; crash_res = 1 }
  od
}

/* ---------------------------------------------------------------- checks */

/* P1 and P6 in every reachable state: this process can move only when one is violated. */
active proctype Invariants() {
end_inv:
  if
  :: !ATOMIC_NOW -> FAIL(P1_atomicity)
  :: !REPORT_OK -> FAIL(P6_wrong_report)
  fi
}

/* P5, and P1 once more, in every final state: when nothing else can move any more. */
active proctype Final() {
  timeout ->
  CHECK(b_state != PREPARED && b_state != ACTIVE && d_local != ACTIVE, P5_branch_left_in_doubt);
  CHECK(ATOMIC_NOW && (d_local == COMMITTED) == ever_C, P1_atomicity);
  CHECK(REPORT_OK, P6_wrong_report)
}

init {
  atomic {
    run Coordinator();
    run Resolver(1)
#if defined(TWO_RESOLVERS) && defined(RESOLVER_FROM_START)
    ; run Resolver(2)   /* another process's resolver or `seigo recover`, from the start */
#endif
  }
}
