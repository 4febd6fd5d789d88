"""Cross-file checks of a built `Config`: what no single file's schema can see.

Every subject covered by exactly one stream, every consumer's stream and every handler path real,
sagas whose states are declared and can all end, picks that name fields that exist, correlation keys
that are known. Problems are located at the line that causes them, and collected, never raised.
"""

from __future__ import annotations

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
                    for sb in streams[b].subjects:
                        if subj.overlap(sa, sb):
                            self.problems.append(
                                self.origins[("streams", b)].problem(
                                    f"subjects {sb!r} overlap stream {a}'s {sa!r}: a subject must belong to one stream",
                                    "subjects",
                                )
                            )

        def check_covered(subject: str, origin: Origin, *path: str | int) -> None:
            if not any(subj.matches(p, subject) for s in streams.values() for p in s.subjects):
                self.problems.append(
                    origin.problem(f"subject {subject!r} is not covered by any stream in streams.yaml", *path)
                )

        for service in config.services.values():
            origin = self.origins[("services", service.name)]
            if service.dead_letter.stream not in streams:
                self.problems.append(
                    origin.problem(f"dead-letter stream {service.dead_letter.stream!r} is not declared", "dead_letter")
                )
            else:
                dl = streams[service.dead_letter.stream]
                probe = f"{service.dead_letter.subject_prefix}.{service.name}.x"
                if not any(subj.matches(p, probe) for p in dl.subjects):
                    self.problems.append(
                        origin.problem(
                            f"dead-letter subjects {service.dead_letter.subject_prefix}.> are not in stream {dl.name}",
                            "dead_letter",
                        )
                    )
            for durable, consumer in service.consumers.items():
                if consumer.stream not in streams:
                    self.problems.append(
                        origin.problem(f"stream {consumer.stream!r} is not declared", "consumers", durable, "stream")
                    )
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
            for i, binding in enumerate(service.bindings):
                check_covered(binding.subject, origin, "handlers", i, "subject")
                if not any(
                    subj.matches(f, binding.subject) for c in service.consumers.values() for f in c.filter_subjects
                ):
                    self.problems.append(
                        origin.problem(
                            f"no consumer of service {service.name!r} receives {binding.subject!r}",
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
                    self.problems.append(origin.problem(f"KV bucket {bucket!r} is not declared in kv", "kv", i))

        for subject in config.messages:
            check_covered(subject, self.origins[("messages", subject)])
        for bucket in config.data:
            if bucket not in config.buckets:
                self.problems.append(
                    self.origins[("data", bucket)].problem(f"KV bucket {bucket!r} is not declared in kv")
                )
        for saga in config.sagas.values():
            self.saga(config, saga, check_covered)

    def saga(self, config: Config, saga: SagaSpec, check_covered: Any) -> None:
        origin = self.origins[("sagas", saga.name)]
        service = config.services.get(saga.service)
        if service is None:
            self.problems.append(origin.problem(f"service {saga.service!r} is not declared", "service"))
        elif saga.consumer not in service.consumers:
            self.problems.append(
                origin.problem(f"service {saga.service!r} has no consumer {saga.consumer!r}", "consumer")
            )
        else:
            consumer = service.consumers[saga.consumer]
            for subject in sorted(saga.subjects()):
                if not any(subj.matches(f, subject) for f in consumer.filter_subjects):
                    self.problems.append(
                        origin.problem(f"consumer {saga.consumer!r} does not receive {subject!r}", "consumer")
                    )
        if saga.bucket not in config.buckets:
            self.problems.append(origin.problem(f"KV bucket {saga.bucket!r} is not declared in kv", "bucket"))
        if saga.timer_subject:
            check_covered(f"{saga.timer_subject}.fire", origin, "timers", "subject")
            timer_stream = config.streams.get(saga.timer_stream or "")
            if timer_stream is None:
                self.problems.append(origin.problem(f"timer stream {saga.timer_stream!r} is not declared", "timers"))
            elif not timer_stream.allow_msg_schedules:
                self.problems.append(
                    origin.problem(f"timer stream {timer_stream.name} must set 'allow_msg_schedules: true'", "timers")
                )
        elif any(s.timeout for s in saga.states.values()) or saga.steps:
            self.problems.append(
                origin.problem("states with timeouts or compensations need a 'timers' stream and subject")
            )
        for subject in sorted(saga.subjects() | saga.emitted()):
            check_covered(subject, origin)
        states = saga.states
        if saga.start_state not in states:
            self.problems.append(origin.problem(f"start state {saga.start_state!r} is not declared", "start", "state"))
        edges: dict[str, set[str]] = {}
        for state in states.values():
            targets = edges.setdefault(state.name, set())
            if state.awaits and state.awaits not in saga.steps:
                self.problems.append(
                    origin.problem(f"step {state.awaits!r} is not declared in steps", "states", state.name, "awaits")
                )
            if state.timeout:
                targets.add(state.timeout.goto)
                if state.timeout.goto not in states:
                    self.problems.append(
                        origin.problem(
                            f"state {state.timeout.goto!r} is not declared", "states", state.name, "timeout", "goto"
                        )
                    )
            for subject, t in state.on.items():
                if t.goto:
                    targets.add(t.goto)
                    if t.goto not in states:
                        self.problems.append(
                            origin.problem(
                                f"state {t.goto!r} is not declared", "states", state.name, "on", subject, "goto"
                            )
                        )
                if t.completes and t.completes not in saga.steps:
                    self.problems.append(
                        origin.problem(
                            f"step {t.completes!r} is not declared in steps",
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
                        "terminal state",
                        "compensation",
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
