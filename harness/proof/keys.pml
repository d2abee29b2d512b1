/*
 * oncesync's idempotency-key protocol, as a Promela model checked with spin (harness/proof).
 *
 * One key (idempotencyKeys/{scope~id}) guards one unit of work of W fenced writes: an expansion
 * (a slice of a Job: its chunks, each written with its resume point) or a chunk import (W = 1).
 * Slices are independent keys of this same protocol over disjoint chunk indexes, so one key is
 * the model. 1..P instances receive the same message: duplicates at any time, redeliveries after a
 * crash, a send-back, a transient error or a lost lease. What the code does (shared/idem,
 * functions/expander), step by step:
 *
 *   claim       create-if-absent (DocumentRef.Create); DONE: ack as a duplicate; IN_PROGRESS
 *               under a live lease: send back (the redelivery comes later); IN_PROGRESS with the
 *               lease run out or released: take over, conditioned on the key as read, so of two
 *               racers one wins
 *   search      the work starts, or resumes after the last unit written (the store's resume point)
 *   write       a fenced write: it takes effect only while the writer holds the key (owner as
 *               read, conditioned on the key's update time), and it renews the lease (heartbeat)
 *   handoff     the time budget is spent: release marked as a checkpoint, then a continuation (a
 *               new message) takes the key over and resumes
 *   release     a transient error: the lease is released, the message redelivered
 *   abandon     a permanent error (poison): the key is deleted, then the message dead-lettered
 *   complete    the key DONE (fenced), then the ack
 *   crash       at every step: nothing after it runs; the lease stays until it runs out
 *   zombie      the lease runs out under a live, slow owner, which goes on (a gen2 function that
 *               times out keeps running)
 *   sweep       the recovery sweep publishes the message again while the work is unfinished (a
 *               PENDING Job's expand message): one more instance; checked with P=1 SWEEPS=1
 *
 * Steps of the code's probes (the test in proof_test.go fails when the code has one not listed):
 *
 *   step scheduler.claimed       claim
 *   step scheduler.scheduled     write
 *   step scheduler.published     complete
 *   step expander.claimed        claim
 *   step expander.searched       search
 *   step expander.chunk_written  write
 *   step expander.planned        write
 *   step expander.published      complete
 *   step importer.claimed        claim
 *   step importer.committed      write
 *   step importer.finished       complete
 *
 * Properties, checked in every reachable state and at quiescence (no process can move):
 *   fencing     no write of an owner takes effect after its key was taken over (assert in write)
 *   once        every unit of work takes effect at most once, and, unless the message was
 *               dead-lettered, exactly once
 *   searches    searches <= 1 + interruptions the schedule made (crashes, leases run out under
 *               a slow owner, transient errors, hand-offs): a duplicate never searches again
 *   no key held no lease is left live; the key ends DONE unless the message was dead-lettered,
 *               and the delivery that dead-letters it has deleted it first
 *
 * Mutants, each refuted by a counterexample (proof_test.go): NOFENCE, LIVE_TAKEOVER,
 * ABANDON_KEEPS_KEY, COMPLETE_EARLY, NO_CONTINUATION.
 *
 * Events: each step prints "@ <attempt> <what>" (attempt 0: the clock) inside its atomic block, so
 * a trail's replay (spin -t) lists them in order and adds no interleaving point; the chaos suite
 * turns the mutants' shortest trails into schedules for the real code (harness/chaos).
 */

#ifndef W
#define W 2            /* fenced writes of the work */
#endif
#ifndef P
#define P 2            /* instances receiving the message */
#endif
#ifndef CRASHES
#define CRASHES 1
#endif
#ifndef SLOW
#define SLOW 1         /* leases that run out under a live owner */
#endif
#ifndef RELEASES
#define RELEASES 1     /* transient errors */
#endif
#ifndef HANDOFFS
#define HANDOFFS 1     /* time budgets spent */
#endif
#ifndef SWEEPS
#define SWEEPS 0       /* recovery sweeps that publish the message again */
#endif

mtype = { ABSENT, INPROG, DONE };

mtype state = ABSENT;  /* the key document */
byte owner = 0;        /* its lease holder (an attempt's id) */
bool alive = false;    /* the lease has not run out and was not released */
bool holderUp = false; /* the holder's instance still runs */
byte epoch = 0;        /* claims so far: a new owner each */
byte written[W];       /* how often each unit took effect */
byte next = 0;         /* the resume point the store holds */
byte searches = 0;
byte interrupts = 0;
byte crashes = 0, slows = 0, releases = 0, handoffs = 0, sweeps = 0;
bool acked = false;    /* the work's message acked after the work (or a duplicate of it) */
bool dead = false;     /* dead-lettered */
bool poison = false;   /* the message fails permanently, every time */
byte ids = 0;

#ifdef NOFENCE
#define FENCED(me) (true)
#else
#define FENCED(me) (state == INPROG && owner == me)
#endif

/* The lease runs out: under a crashed holder, eventually; under a live one, at most SLOW times. */
active proctype Clock() {
end:
	do
	:: atomic { state == INPROG && alive && !holderUp -> alive = false; printf("@ 0 expires-crashed\n") }
	:: atomic { state == INPROG && alive && holderUp && slows < SLOW -> alive = false; slows++; interrupts++; printf("@ 0 expires-live\n") }
	od
}

/* The recovery sweep (functions/scheduler): while the work is unfinished (the resume point short
 * of the end, as a Job stays PENDING until its plan is written), a tick publishes the message
 * again, at most SWEEPS times: one more instance, at any time. */
active proctype Sweep() {
end:
	do
	:: atomic { sweeps < SWEEPS && next < W -> sweeps++; printf("@ 0 sweep\n"); run Instance() }
	od
}

/* A crash at this point: the instance dies; its message is redelivered as a new attempt. */
inline crashpoint() {
	if
	:: atomic { crashes < CRASHES -> crashes++; interrupts++; printf("@ %d crash\n", me); if :: owner == me -> holderUp = false :: else -> skip fi };
		goto attempt
	:: true -> skip
	fi
}

proctype Instance() {
	byte me, mine, i, ro;
	mtype rs;
	bool ra;
attempt:
	if
	:: acked || dead -> goto stop
	:: else -> skip
	fi;
	atomic { ids++; me = ids };
claim:
	atomic { rs = state; ro = owner; ra = alive };
	if
	:: rs == DONE -> printf("@ %d duplicate\n", me); goto ack
	:: rs == INPROG && ra ->
#ifdef LIVE_TAKEOVER
		if
		:: atomic { state == INPROG && owner == ro -> owner = me; alive = true; holderUp = true; epoch++; mine = epoch; printf("@ %d takeover-live\n", me) }; goto claimed
		:: true -> skip
		fi;
#endif
		(acked || dead || state != INPROG || !alive || owner != ro); /* sent back; redelivered once it changed */
		goto attempt
	:: rs == ABSENT ->
		atomic {
			if
			:: state == ABSENT -> state = INPROG; owner = me; alive = true; holderUp = true; epoch++; mine = epoch; printf("@ %d claim\n", me)
			:: else -> goto claim /* AlreadyExists: read it */
			fi
		}
	:: rs == INPROG && !ra ->
		atomic {
			if
			:: state == INPROG && owner == ro && !alive -> owner = me; alive = true; holderUp = true; epoch++; mine = epoch; printf("@ %d takeover\n", me)
			:: else -> goto claim /* another racer won */
			fi
		}
	fi;
claimed:
	/* step claim */
	crashpoint();
#ifdef COMPLETE_EARLY
	atomic { if :: state == INPROG && owner == me -> state = DONE; alive = false :: else -> goto lost fi };
#endif
	if
	:: poison ->
		/* abandon: delete the key, then dead-letter */
#ifndef ABANDON_KEEPS_KEY
		atomic { if :: state == INPROG && owner == me -> state = ABSENT; owner = 0; alive = false :: else -> skip fi };
#endif
		atomic {
			assert(!(state == INPROG && owner == me)); /* a dead-lettered message never leaves its key held */
			dead = true;
			if :: owner == me -> holderUp = false :: else -> skip fi
		};
		goto stop
	:: else -> skip
	fi;
	/* search: start or resume after the last unit written */
	/* step search */
	atomic { searches++; i = next; printf("@ %d search %d\n", me, i) };
	do
	:: i < W ->
		/* step write */
		atomic {
			if
			:: FENCED(me) ->
				assert(mine == epoch); /* fencing: no write after a takeover */
				written[i]++;
				assert(written[i] <= 1); /* once */
				next = i + 1;
				printf("@ %d write %d\n", me, i);
				alive = true /* heartbeat */
			:: else -> goto lost
			fi
		};
		i++;
		crashpoint();
		if
		:: atomic { releases < RELEASES && state == INPROG && owner == me -> alive = false; releases++; interrupts++ };
			goto attempt /* transient error: released, redelivered */
		:: atomic { handoffs < HANDOFFS && i < W && state == INPROG && owner == me -> alive = false; handoffs++; interrupts++ };
#ifndef NO_CONTINUATION
			run Instance(); /* the continuation: a new message */
#endif
			goto stop /* this message is acked: the continuation carries the work */
		:: true -> skip
		fi
	:: else -> break
	od;
	/* step complete */
	atomic {
		if
		:: state == INPROG && owner == me -> state = DONE; alive = false; holderUp = false; printf("@ %d complete\n", me)
		:: state == DONE -> skip /* COMPLETE_EARLY */
		:: else -> goto lost
		fi
	};
	crashpoint(); /* a lost ack: the redelivery finds the key DONE */
ack:
	acked = true;
	goto stop;
lost:
	/* the lease was lost to another owner: the delivery fails and is redelivered */
	goto attempt;
stop:
	skip
}

/* The message, poison or not, delivered to 1..P instances (a single delivery, or duplicates). */
init {
	byte k = 0, n = 1;
	if
	:: poison = false
	:: poison = true
	fi;
	do
	:: n < P -> n++
	:: true -> break
	od;
	atomic {
		do
		:: k < n -> run Instance(); k++
		:: else -> break
		od
	}
}

/* At quiescence: no lease left live; unless dead-lettered, the key DONE and the work done exactly
 * once; no extra search. (After a dead letter, a duplicate that claimed the deleted key and
 * crashed leaves it IN_PROGRESS with its lease run out: a replay of the dead letter takes it over.) */
active proctype Quiescence() {
	byte k;
	timeout ->
	assert(!(state == INPROG && alive));
	assert(dead || acked);
	if
	:: !dead ->
		assert(state == DONE);
		for (k : 0 .. W - 1) {
			assert(written[k] == 1)
		}
	:: else -> skip
	fi;
	assert(searches <= 1 + interrupts)
}
