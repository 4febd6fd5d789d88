"""Cross-file checks of a built `Config`: what no single file's schema can see.

Every subject covered by exactly one stream, every consumer's stream and every handler path real,
sagas whose states are declared and can all end, picks that name fields that exist, correlation keys
that are known. Problems are located at the line that causes them, and collected, never raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runner.config import dataflow, dotted
from runner.config import subjects as subj
from runner.config.http import http_problems
from runner.config.model import (
    REJECTED_STATE,
    Config,
    SagaSpec,
)
from runner.config.suggest import did_you_mean
from runner.config.yamlsrc import Document, Problem


@dataclass
class Origin:
    """Where a named element was declared, for cross-check messages."""

    doc: Document
    path: tuple[str | int, ...]

    def problem(self, message: str, *sub: str | int) -> Problem:
        return self.doc.problem((*self.path, *sub), message)


@dataclass
class CrossChecks:
    """Checks a built model; `origins` says where each named element was declared."""

    origins: dict[tuple[str, str], Origin]
    allow_modules: set[str]
    problems: list[Problem] = field(default_factory=list)

    def run(self, config: Config) -> None:
        streams = config.streams
        names = sorted(streams)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                for sa in streams[a].subjects:
                    for j, sb in enumerate(streams[b].subjects):
                        if subj.overlap(sa, sb):
                            self.problems.append(
                                self.origins[("streams", b)].problem(
                                    f"subjects {sb!r} overlap stream {a}'s {sa!r}: a subject must belong to one stream",
                                    "subjects",
                                    j,
                                )
                            )

        def covered(subject: str) -> bool:
            return any(subj.matches(p, subject) for s in streams.values() for p in s.subjects)

        declared = declared_subjects(config)

        def check_covered(subject: str, origin: Origin, *path: str | int) -> None:
            if not covered(subject):
                hint = did_you_mean(subject, filter(covered, declared))
                self.problems.append(
                    origin.problem(f"subject {subject!r} is not covered by any stream in streams.yaml{hint}", *path)
                )

        for service in config.services.values():
            origin = self.origins[("services", service.name)]
            if service.dead_letter.stream not in streams:
                hint = did_you_mean(service.dead_letter.stream, streams)
                message = f"dead-letter stream {service.dead_letter.stream!r} is not declared{hint}"
                self.problems.append(origin.problem(message, "dead_letter", "stream"))
            else:
                dl = streams[service.dead_letter.stream]
                probe = f"{service.dead_letter.subject_prefix}.{service.name}.x"
                if not any(subj.matches(p, probe) for p in dl.subjects):
                    self.problems.append(
                        origin.problem(
                            f"dead-letter subjects {service.dead_letter.subject_prefix}.> are not in stream {dl.name}",
                            "dead_letter",
                            "subject_prefix",
                        )
                    )
            for durable, consumer in service.consumers.items():
                if consumer.stream not in streams:
                    message = f"stream {consumer.stream!r} is not declared{did_you_mean(consumer.stream, streams)}"
                    self.problems.append(origin.problem(message, "consumers", durable, "stream"))
                    continue
                for i, f in enumerate(consumer.filter_subjects):
                    if not any(subj.within(f, p) for p in streams[consumer.stream].subjects):
                        self.problems.append(
                            origin.problem(
                                f"filter {f!r} is outside stream {consumer.stream}'s subjects",
                                "consumers",
                                durable,
                                "filter_subjects",
                                i,
                            )
                        )
            filters = [f for c in service.consumers.values() for f in c.filter_subjects]
            for i, binding in enumerate(service.bindings):
                check_covered(binding.subject, origin, "handlers", i, "subject")
                if not receives(filters, binding.subject):
                    hint = did_you_mean(binding.subject, (s for s in declared if receives(filters, s)))
                    self.problems.append(
                        origin.problem(
                            f"no consumer of service {service.name!r} receives {binding.subject!r}{hint}",
                            "handlers",
                            i,
                            "subject",
                        )
                    )
                for outcome, subject in binding.emits.items():
                    check_covered(subject, origin, "handlers", i, "emits", outcome)
                error = dotted.problem(config.root, binding.handler, dotted.HANDLER, self.allow_modules)
                if error:
                    self.problems.append(origin.problem(error, "handlers", i, "handler"))
            if service.http:
                for message, where in http_problems(config, service.http, self.allow_modules):
                    self.problems.append(origin.problem(message, "http", *where))
            for i, bucket in enumerate(service.kv):
                if bucket not in config.buckets:
                    message = f"KV bucket {bucket!r} is not declared in kv{did_you_mean(bucket, config.buckets)}"
                    self.problems.append(origin.problem(message, "kv", i))

        for subject in config.messages:
            check_covered(subject, self.origins[("messages", subject)])
        for bucket in config.data:
            if bucket not in config.buckets:
                message = f"KV bucket {bucket!r} is not declared in kv{did_you_mean(bucket, config.buckets)}"
                self.problems.append(self.origins[("data", bucket)].problem(message))
        for saga in config.sagas.values():
            self.saga(config, saga, check_covered, declared)

    def saga(self, config: Config, saga: SagaSpec, check_covered: Any, declared: set[str]) -> None:
        origin = self.origins[("sagas", saga.name)]
        consumed = first_places(dataflow.consumed_at(saga))
        service = config.services.get(saga.service)
        if service is None:
            message = f"service {saga.service!r} is not declared{did_you_mean(saga.service, config.services)}"
            self.problems.append(origin.problem(message, "service"))
        elif saga.consumer not in service.consumers:
            hint = did_you_mean(saga.consumer, service.consumers)
            self.problems.append(
                origin.problem(f"service {saga.service!r} has no consumer {saga.consumer!r}{hint}", "consumer")
            )
        else:
            filters = service.consumers[saga.consumer].filter_subjects
            for subject, where in consumed.items():
                if not receives(filters, subject):
                    hint = did_you_mean(subject, (s for s in declared if receives(filters, s)))
                    message = f"consumer {saga.consumer!r} does not receive {subject!r}{hint}"
                    self.problems.append(origin.problem(message, *where))
        if saga.bucket not in config.buckets:
            message = f"KV bucket {saga.bucket!r} is not declared in kv{did_you_mean(saga.bucket, config.buckets)}"
            self.problems.append(origin.problem(message, "bucket"))
        if saga.timer_subject:
            check_covered(f"{saga.timer_subject}.fire", origin, "timers", "subject")
            timer_stream = config.streams.get(saga.timer_stream or "")
            if timer_stream is None:
                hint = did_you_mean(saga.timer_stream or "", config.streams)
                message = f"timer stream {saga.timer_stream!r} is not declared{hint}"
                self.problems.append(origin.problem(message, "timers", "stream"))
            elif not timer_stream.allow_msg_schedules:
                self.problems.append(
                    self.origins[("streams", timer_stream.name)].problem(
                        f"stream {timer_stream.name} is saga {saga.name!r}'s timer stream: "
                        "it must set 'allow_msg_schedules: true'",
                        "allow_msg_schedules",
                    )
                )
        elif any(s.timeout for s in saga.states.values()) or saga.steps:
            # at the first timeout, else at steps: what makes the timers necessary
            timed = [("states", s.name, "timeout") for s in saga.states.values() if s.timeout]
            where = timed[0] if timed else ("steps",)
            self.problems.append(
                origin.problem("states with timeouts or compensations need a 'timers' stream and subject", *where)
            )
        emitted = first_places((where, e.subject) for where, e in dataflow.emits_at(saga))
        for subject, where in {**emitted, **consumed}.items():
            check_covered(subject, origin, *where)
        states = saga.states
        if saga.start_state not in states:
            message = f"start state {saga.start_state!r} is not declared{did_you_mean(saga.start_state, states)}"
            self.problems.append(origin.problem(message, "start", "state"))
        edges: dict[str, set[str]] = {}
        for state in states.values():
            targets = edges.setdefault(state.name, set())
            if state.awaits and state.awaits not in saga.steps:
                message = f"step {state.awaits!r} is not declared in steps{did_you_mean(state.awaits, saga.steps)}"
                self.problems.append(origin.problem(message, "states", state.name, "awaits"))
            if state.timeout:
                targets.add(state.timeout.goto)
                if state.timeout.goto not in states:
                    message = f"state {state.timeout.goto!r} is not declared{did_you_mean(state.timeout.goto, states)}"
                    self.problems.append(origin.problem(message, "states", state.name, "timeout", "goto"))
            for subject, t in state.on.items():
                if t.goto:
                    targets.add(t.goto)
                    if t.goto not in states:
                        message = f"state {t.goto!r} is not declared{did_you_mean(t.goto, states)}"
                        self.problems.append(origin.problem(message, "states", state.name, "on", subject, "goto"))
                if t.completes and t.completes not in saga.steps:
                    self.problems.append(
                        origin.problem(
                            f"step {t.completes!r} is not declared in steps{did_you_mean(t.completes, saga.steps)}",
                            "states",
                            state.name,
                            "on",
                            subject,
                            "completes",
                        )
                    )
        if saga.steps:
            failed = states.get(saga.compensation_failed_state)
            if failed is None or not failed.terminal:
                self.problems.append(
                    origin.problem(
                        f"compensation failed_state {saga.compensation_failed_state!r} must be declared as a "
                        "terminal state" + ("" if failed else did_you_mean(saga.compensation_failed_state, states)),
                        "compensation",
                        "failed_state",
                    )
                )
        if REJECTED_STATE in states and not states[REJECTED_STATE].terminal:
            message = f"state {REJECTED_STATE!r} is where an instance whose start was rejected ends: mark it terminal"
            self.problems.append(origin.problem(message, "states", REJECTED_STATE))
        for where, message in dataflow.problems(saga, config.messages):
            self.problems.append(origin.problem(message, *where))
        terminal = {s.name for s in states.values() if s.terminal}
        if not terminal:
            self.problems.append(
                origin.problem("no terminal state: mark at least one state 'terminal: true'", "states")
            )
        reaches = set(terminal)
        changed = True
        while changed:
            changed = False
            for name, targets in edges.items():
                if name not in reaches and targets & reaches:
                    reaches.add(name)
                    changed = True
        for name in states:
            if name not in reaches:
                self.problems.append(origin.problem(f"state {name!r} can never reach a terminal state", "states", name))


def receives(filters: Iterable[str], subject: str) -> bool:
    return any(subj.matches(f, subject) for f in filters)


def declared_subjects(config: Config) -> set[str]:
    """Every literal subject the config names (bindings, emits, messages, sagas): what a typo is compared with."""
    out = set(config.messages)
    for service in config.services.values():
        for binding in service.bindings:
            out.add(binding.subject)
            out.update(binding.emits.values())
    for saga in config.sagas.values():
        out |= saga.subjects() | saga.emitted()
    return {s for s in out if "*" not in s and ">" not in s}


def first_places(places: Iterable[tuple[tuple[str | int, ...], str]]) -> dict[str, tuple[str | int, ...]]:
    """subject → where it is first written (a subject named twice is reported once, at its first place)."""
    out: dict[str, tuple[str | int, ...]] = {}
    for where, subject in places:
        out.setdefault(subject, where)
    return out
