"""The statements of `analyze`: checked against the extracted fields, then lowered.

What a statement may group by (`by G`), filter on (`for ...`) and aggregate is
decided here from the declarations, so that the analysis stage picks its
statistical test from the plan alone:

- `by G`: an intervention (its arms), `variant` (the arms of the only one),
  the row columns `segment`, `population`, `world`, `replicate`, or an
  attribute: a demographics attribute of a population (numeric ones grouped
  by the distribution's brackets), a `vary` dimension, or a persona field;
- aggregates `mean`, `median`, `sd` (numbers), `share`, `count`, with a
  comparison inside (`share(F >= 4)`, `share(F in [4, 5])`, `count(F == m)`),
  and the metrics of a preceding `validate` of the field (`ks(F)`);
- `AGG for GROUP` or `AGG for ATTRIBUTE == value`, and an aggregate as the
  bound of another.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context
from tiny_dsl.checks.loader import Loader
from tiny_dsl.checks.populations import check_unknown_label
from tiny_dsl.checks.results import (
    GROUPABLE,
    NUMERIC,
    UNGROUPABLE,
    FieldInfo,
    _bound,
    _member,
    _proportion,
    _show,
    _statement_text,
    check_ambiguous_variant,
    check_field_type_mismatch,
    check_intervention_not_in_world,
    check_not_a_member,
    check_percent_not_allowed,
)
from tiny_dsl.checks.values import (
    as_float,
    check_invalid_choice,
    check_out_of_range,
    check_reversed_range,
)
from tiny_dsl.checks.worlds import resolve_member
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax import ast

AGGREGATES = ("mean", "median", "sd", "share", "count")
# The metrics a `validate` statement computes that `expect` may bound.
METRICS = (
    "ks",
    "ks_p",
    "welch_p",
    "mann_whitney_p",
    "wasserstein",
    "chi2_p",
    "sd_ratio",
    "overlap",
    "correlation",
    "mae",
)
# Metrics of `validate FIELD by G against "margins.csv"`; the others need real answers.
MARGIN_METRICS = ("correlation", "mae")
PROPORTIONS = ("share", "ks", "ks_p", "welch_p", "mann_whitney_p", "chi2_p", "overlap")
# The row columns every result row has (and `replicate` with replicates).
ROW_GROUPS = ("segment", "population", "world", "replicate")
# Persona fields that are result columns (`persona_<field>`, extraction/rows.py).
PERSONA_FIELDS = ("age", "gender", "nationality", "residence", "education", "occupation")
PERSONA_PREFIX = "persona_"
ORDERING = (">", "<", ">=", "<=")
MARGIN_STATISTICS = ("mean", "share")
MAX_REAL_ROWS = 1_000_000


class Analyses:
    """Checks the statements of `analyze` against the extracted fields.

    `sources` holds the text of the file the statements are in, which each
    lowered analysis quotes; `loader` reads the files `validate` names.
    """

    def __init__(
        self,
        ctx: Context,
        fields: dict[str, FieldInfo],
        sources: Mapping[str, SourceFile],
        loader: Loader,
        scenario: Path,
    ):
        self.ctx = ctx
        self.scenario = scenario
        self.fields = fields
        self.sources = sources
        self.loader = loader
        self.used: set[str] = set()
        # field -> the kinds of `validate` that precede (answers, margins)
        self.validated: dict[str, set[str]] = {}

    def check(self, block: ast.Analyze) -> tuple[m.Analysis, ...]:
        """Check every statement; the lowered analyses of those without errors."""
        lowered: list[m.Analysis] = []
        for statement in block.statements:
            errors = self.ctx.error_count
            analysis = self.check_statement(statement)
            if analysis is not None and self.ctx.error_count == errors:
                lowered.append(analysis)
        return tuple(lowered)

    def check_statement(self, statement: ast.Analysis) -> m.Analysis | None:
        text = _statement_text(statement.span, self.sources)
        span = statement.span
        match statement:
            case ast.CompareStmt() | ast.SummarizeStmt():
                compare = isinstance(statement, ast.CompareStmt)
                grouping = self.check_grouped(statement, compare)
                if compare:
                    return m.CompareAnalysis(
                        statement.field.name, statement.by.name, text, span, grouping
                    )
                return m.SummarizeAnalysis(
                    statement.field.name, statement.by.name, text, span, grouping
                )
            case ast.FunnelStmt():
                self.check_funnel(statement)
                return m.FunnelAnalysis(tuple(f.name for f in statement.fields), text, span)
            case ast.ValidateStmt():
                return self.check_validate(statement, text)
            case _:
                return self.check_expect(statement, text)

    # ------------------------------------------------------------------ fields

    def field(self, ident: ast.Ident) -> FieldInfo | None:
        """The field `ident` names; reports an unknown one (unless syntax errors may hide it)."""
        self.used.add(ident.name)
        found = self.fields.get(ident.name)
        if found is None and not self.ctx.incomplete:
            from tiny_dsl.checks.context import check_unknown_name

            check_unknown_name(
                self.ctx,
                ident.name,
                ident.span,
                "extracted field",
                "`analyze`",
                self.fields,
                declare_hint="fields are declared in an `extract from SOURCE { ... }` block",
            )
        return found

    # ---------------------------------------------------------------- grouping

    def attributes(self) -> dict[str, m.Grouping]:
        """Every attribute a statement may group or filter by, with its grouping."""
        found: dict[str, m.Grouping] = {}
        for population in self.ctx.populations.values():
            demographics = self.ctx.demographics.get(population.demographics)
            for distribution in demographics.distributions if demographics else ():
                brackets = distribution.shares if distribution.is_numeric else ()
                found.setdefault(
                    distribution.attribute,
                    m.Grouping(
                        distribution.attribute,
                        PERSONA_PREFIX + distribution.attribute,
                        brackets=tuple(brackets),
                    ),
                )
            for dimension in population.vary:
                found.setdefault(
                    dimension.name, m.Grouping(dimension.name, PERSONA_PREFIX + dimension.name)
                )
        for name in PERSONA_FIELDS:
            found.setdefault(name, m.Grouping(name, PERSONA_PREFIX + name))
        return found

    def grouping(self, by: ast.Ident, where: str) -> m.Grouping | None:
        """What `by NAME` groups by; an unknown name is reported with the valid ones."""
        name = by.name
        interventions = list(self.ctx.declared["intervention"])
        if name in interventions:
            return m.Grouping(name, None, intervention=name)
        if name == "variant":
            if len(interventions) == 1:
                return m.Grouping(name, None, intervention=interventions[0])
            return None  # reported by the caller, which knows the statement
        if name in ROW_GROUPS:
            return m.Grouping(name, name)
        attributes = self.attributes()
        if name in attributes:
            return attributes[name]
        check_invalid_choice(
            self.ctx,
            where,
            name,
            by.span,
            [*ROW_GROUPS, "variant", *interventions, *attributes],
        )
        return None

    def check_grouped(
        self, statement: ast.CompareStmt | ast.SummarizeStmt, compare: bool
    ) -> m.Grouping | None:
        """`compare/summarize F by G`: F of a groupable type, G a grouping of its rows."""
        keyword = "compare" if compare else "summarize"
        info = self.field(statement.field)
        grouping = self.grouping(statement.by, f"{keyword} ... by")
        if statement.by.name == "variant" and grouping is None:
            check_ambiguous_variant(self.ctx, statement, list(self.ctx.declared["intervention"]))
        if info is None or info.spec is None:
            return grouping
        excluded = (*UNGROUPABLE, "rank") if compare else UNGROUPABLE
        if info.spec.kind in excluded:
            check_field_type_mismatch(
                self.ctx, statement.field, info.spec, f"`{keyword}`", GROUPABLE
            )
        if grouping is not None and grouping.intervention is not None:
            self.check_arms(statement.by, info, grouping.intervention)
        return grouping

    def check_arms(self, by: ast.Ident, info: FieldInfo, intervention: str) -> None:
        """Grouping by an intervention's arms needs it delivered in a world of the field."""
        if self.ctx.incomplete:
            return
        delivered = self.ctx.delivered.get(intervention, set())
        # A group source's rows belong to no world: its members may be targeted anywhere.
        if None in info.worlds or any(world in delivered for world in info.worlds):
            return
        check_intervention_not_in_world(self.ctx, by, info, f"`{intervention}` is never delivered")

    # ------------------------------------------------------------------ funnel

    def check_funnel(self, statement: ast.FunnelStmt) -> None:
        """`funnel F1, F2, ...`: at least two distinct `bool` stages."""
        if len(statement.fields) < 2:
            self.ctx.report(
                diag.error(
                    codes.FUNNEL_TOO_SHORT,
                    "a funnel needs at least two stages",
                    statement.span,
                    "only one stage",
                    help=["list the stages in order: `funnel opened, clicked, bought`"],
                )
            )
        seen: dict[str, ast.Ident] = {}
        for ident in statement.fields:
            if ident.name in seen:
                self.ctx.report(
                    diag.error(
                        codes.DUPLICATE_NAME,
                        f"stage `{ident.name}` is listed twice",
                        ident.span,
                        "listed again here",
                        secondary=[Label(seen[ident.name].span, "first listed here")],
                        help=["list every stage once"],
                    )
                )
                continue
            seen[ident.name] = ident
            info = self.field(ident)
            if info is not None and info.spec is not None and info.spec.kind != "bool":
                check_field_type_mismatch(
                    self.ctx, ident, info.spec, "a funnel stage", "a `bool` field"
                )

    # ------------------------------------------------------------------ expect

    def check_expect(
        self, statement: ast.ExpectBetween | ast.ExpectCompare | ast.ExpectVersus, text: str
    ) -> m.ExpectAnalysis | None:
        """`expect AGG [for F] between a and b`, `... OP x` or `... OP AGG [for F]`."""
        aggregate = self.check_aggregate(statement.aggregate, statement.filter)
        function = statement.aggregate.function.name
        span = statement.span
        if isinstance(statement, ast.ExpectVersus):
            other = self.check_aggregate(statement.other, statement.other_filter)
            if aggregate is None or other is None:
                return None
            return m.ExpectAnalysis(aggregate, statement.comparator, text, span, other=other)
        if isinstance(statement, ast.ExpectBetween):
            bounds = [statement.low, statement.high]
        else:
            bounds = [statement.bound]
        valid = all([self.check_bound(function, bound) for bound in bounds])
        if valid and isinstance(statement, ast.ExpectBetween):
            # Compare as proportions, so that `between 0.2 and 80%` is in order.
            written = ast.Range(
                ast.Number(_proportion(statement.low), _show(statement.low)),
                ast.Number(_proportion(statement.high), _show(statement.high)),
                statement.low.span.to(statement.high.span),
            )
            valid = check_reversed_range(self.ctx, f"{function}(...)", written, strict=True)
        if aggregate is None or not valid:
            return None
        if isinstance(statement, ast.ExpectBetween):
            return m.ExpectAnalysis(
                aggregate,
                "between",
                text,
                span,
                low=_bound(statement.low),
                high=_bound(statement.high),
            )
        return m.ExpectAnalysis(
            aggregate, statement.comparator, text, span, bound=_bound(statement.bound)
        )

    def check_aggregate(
        self, aggregate: ast.Aggregate, filter_: ast.Filter | None
    ) -> m.Aggregate | None:
        """An aggregate's function, field and comparison, and its filter."""
        function = aggregate.function.name
        errors = self.ctx.error_count
        if function not in AGGREGATES and function not in METRICS:
            check_invalid_choice(
                self.ctx, "expect", function, aggregate.function.span, [*AGGREGATES, *METRICS]
            )
        info = self.field(aggregate.field)
        row_filter = self.check_filter(filter_) if filter_ is not None else None
        if info is None or info.spec is None or self.ctx.error_count != errors:
            return None
        spec = info.spec
        if function in METRICS:
            return self.check_metric(aggregate, filter_, spec)
        if aggregate.comparator is None:
            return self.check_plain(aggregate, spec, row_filter)
        if function not in ("share", "count"):
            check_field_type_mismatch(
                self.ctx,
                aggregate.field,
                spec,
                f"`{function}({spec.name} {aggregate.comparator} ...)`",
                "`share(...)` or `count(...)` around a comparison",
            )
            return None
        return self.check_comparison(aggregate, spec, row_filter)

    def check_plain(
        self, aggregate: ast.Aggregate, spec: m.FieldSpec, row_filter: m.RowFilter | None
    ) -> m.Aggregate | None:
        function = aggregate.function.name
        ident = aggregate.field
        if function in ("mean", "median", "sd") and spec.kind not in NUMERIC:
            check_field_type_mismatch(
                self.ctx, ident, spec, f"`{function}`", "an `int` or `float` field"
            )
            return None
        if function == "share" and spec.kind != "bool":
            hint = (
                f"a comparison: `share({spec.name} >= 4)`"
                if spec.kind in NUMERIC
                else f"`share({spec.name} == member)`"
                if spec.kind == "enum"
                else "a `bool` field"
            )
            check_field_type_mismatch(self.ctx, ident, spec, "`share`", hint)
            return None
        return m.Aggregate(function, spec.name, filter=row_filter)

    def check_comparison(
        self, aggregate: ast.Aggregate, spec: m.FieldSpec, row_filter: m.RowFilter | None
    ) -> m.Aggregate | None:
        """`F OP value` or `F in [..]` inside `share`/`count`, for the field's type."""
        function = aggregate.function.name
        comparator = aggregate.comparator or "=="
        value = aggregate.value
        if spec.kind in UNGROUPABLE or spec.kind == "rank":
            check_field_type_mismatch(
                self.ctx, aggregate.field, spec, f"`{function}(... {comparator} ...)`", GROUPABLE
            )
            return None
        items = value.items if isinstance(value, ast.ListValue) else (value,)
        if comparator == "in" and not items:
            check_invalid_choice(self.ctx, f"{function}(... in [])", "[]", aggregate.span, [])
            return None
        if comparator in ORDERING and spec.kind not in NUMERIC:
            check_field_type_mismatch(
                self.ctx,
                aggregate.field,
                spec,
                f"`{function}({spec.name} {comparator} ...)`",
                "an `int` or `float` field (compare others with `==`, `!=` or `in`)",
            )
            return None
        members: list[str | float] = []
        for item in items:
            member = self.comparison_value(aggregate, spec, item)
            if member is None:
                return None
            members.append(member)
        if comparator == "in":
            return m.Aggregate(function, spec.name, "in", members=tuple(members), filter=row_filter)
        return m.Aggregate(function, spec.name, comparator, members[0], filter=row_filter)

    def comparison_value(
        self, aggregate: ast.Aggregate, spec: m.FieldSpec, value: ast.Value | None
    ) -> str | float | None:
        """The value a field is compared with: a number, an enum member or a boolean."""
        if spec.kind in NUMERIC:
            if isinstance(value, ast.Number):
                number = as_float(self.ctx, spec.name, value)
                return number
            check_not_a_number(self.ctx, aggregate, spec, value)
            return None
        if spec.kind == "bool":
            word = _member(value)
            if word in ("true", "false"):
                return word
            check_unknown_label(
                self.ctx,
                word or "?",
                value.span if value is not None else aggregate.span,
                f"a value of `{spec.name}`",
                ["true", "false"],
            )
            return None
        member = _member(value)
        if member is None:
            if value is not None:
                check_not_a_member(self.ctx, aggregate, spec, value)
            return None
        if member not in spec.members:
            assert value is not None
            check_unknown_label(
                self.ctx, member, value.span, f"a member of `{spec.name}`", list(spec.members)
            )
            return None
        return member

    def check_metric(
        self, aggregate: ast.Aggregate, filter_: ast.Filter | None, spec: m.FieldSpec
    ) -> m.Aggregate | None:
        """A validation metric: the field has a `validate` before, of the right kind."""
        function = aggregate.function.name
        kinds = self.validated.get(spec.name, set())
        wanted = "margins" if function in MARGIN_METRICS else "answers"
        problem = None
        if aggregate.comparator is not None or filter_ is not None:
            problem = f"`{function}` takes the field alone, without a comparison or `for`"
        elif not kinds:
            problem = f"`{function}({spec.name})` is a metric of `validate {spec.name} ...`"
        elif wanted not in kinds:
            needs = "group margins (`by G against`)" if function in MARGIN_METRICS else "answers"
            problem = f"`{function}` compares with real {needs}"
        if problem is None:
            return m.Aggregate(function, spec.name)
        example = (
            f'validate {spec.name} by GROUP against "margins.csv"'
            if function in MARGIN_METRICS
            else f'validate {spec.name} against "real.csv" column "COLUMN"'
        )
        self.ctx.report(
            diag.error(
                codes.METRIC_WITHOUT_VALIDATE,
                problem,
                aggregate.span,
                "no such validation",
                help=[f"validate the field first, in the same `analyze` block: `{example}`"],
            )
        )
        return None

    def check_filter(self, filter_: ast.Filter) -> m.RowFilter | None:
        """`for GROUP` (personas, populations, segments) or `for ATTRIBUTE == value`."""
        text = _filter_text(filter_)
        subject = filter_.subject
        if filter_.comparator is None:
            member = resolve_member(self.ctx, subject, "for", "an `expect` filter")
            return m.RowFilter(text, group=(member,)) if member is not None else None
        name = subject.dotted
        grouping = (
            self.grouping(ast.Ident(name, subject.span), "for") if len(subject.parts) == 1 else None
        )
        if len(subject.parts) != 1:
            check_invalid_choice(self.ctx, "for", name, subject.span, list(self.attributes()))
        if grouping is None:
            return None
        value = _member(filter_.value)
        if value is None and isinstance(filter_.value, ast.Number):
            value = filter_.value.raw or str(filter_.value.value)
        if value is None:
            return None
        column = grouping.column or f"variant_{grouping.intervention}"
        return m.RowFilter(text, column=column, comparator=filter_.comparator, value=value)

    def check_bound(self, function: str, bound: ast.Number | ast.Percent) -> bool:
        """Percentages only for proportions; a proportion is within 0..1 (or 0%..100%)."""
        if isinstance(bound, ast.Percent):
            if function not in PROPORTIONS:
                check_percent_not_allowed(self.ctx, function, bound)
                return False
            if not 0 <= bound.value <= 100:
                check_out_of_range(self.ctx, function, bound.span, bound.raw, 0, 100, unit="%")
                return False
            return True
        if as_float(self.ctx, function, bound) is None:
            return False
        if function in PROPORTIONS and not 0 <= bound.value <= 1:
            check_out_of_range(self.ctx, function, bound.span, str(bound.value), 0, 1)
            return False
        return True

    # ---------------------------------------------------------------- validate

    def check_validate(self, statement: ast.ValidateStmt, text: str) -> m.ValidateAnalysis | None:
        """`validate F against "real.csv" column "C"` / `validate F by G against "m.csv"`."""
        info = self.field(statement.field)
        grouping = (
            self.grouping(statement.by, "validate ... by") if statement.by is not None else None
        )
        read = self.read_csv(statement.path)
        if info is None or info.spec is None or read is None:
            return None
        spec = info.spec
        header, rows, digest = read
        if spec.kind in UNGROUPABLE or spec.kind == "rank":
            check_field_type_mismatch(self.ctx, statement.field, spec, "`validate`", GROUPABLE)
            return None
        if statement.by is None:
            if statement.column is None:
                self.report_missing_column(statement, header)
                return None
            column = self.column_index(statement.column, header)
            if column is None:
                return None
            real = self.real_values(statement, spec, [row[column] for row in rows])
            if real is None:
                return None
            self.validated.setdefault(spec.name, set()).add("answers")
            return m.ValidateAnalysis(
                spec.name,
                statement.path.value,
                digest,
                text,
                statement.span,
                column=statement.column.value,
                real=tuple(real),
            )
        if grouping is None:
            return None
        margins = self.margins(statement, header, rows)
        if margins is None:
            return None
        statistic, values = margins
        self.validated.setdefault(spec.name, set()).add("margins")
        return m.ValidateAnalysis(
            spec.name,
            statement.path.value,
            digest,
            text,
            statement.span,
            grouping=grouping,
            statistic=statistic,
            margins=tuple(values),
        )

    def read_csv(self, path: ast.Str) -> tuple[list[str], list[list[str]], str] | None:
        """The header, rows and sha256 of a CSV file named relative to the scenario."""
        resolved = self.loader.data_path(self.scenario, path)
        if resolved is None:
            return None
        try:
            data = resolved.read_bytes()
        except OSError as exc:
            self.ctx.report(
                diag.error(
                    codes.DATA_FILE,
                    f"cannot read `{path.value}`: {exc.strerror or exc}",
                    path.span,
                    "unreadable",
                    help=["check the path: it is relative to the scenario's folder"],
                )
            )
            return None
        try:
            table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
        except (UnicodeDecodeError, csv.Error) as exc:
            self.ctx.report(
                diag.error(
                    codes.DATA_FILE,
                    f"`{path.value}` is not a UTF-8 CSV file: {exc}",
                    path.span,
                    "not CSV",
                    help=["save the file as CSV (comma-separated, UTF-8) with a header row"],
                )
            )
            return None
        table = [row for row in table if any(cell.strip() for cell in row)]
        if not table or len(table) > MAX_REAL_ROWS:
            self.ctx.report(
                diag.error(
                    codes.DATA_FILE,
                    f"`{path.value}` has no rows"
                    if not table
                    else f"`{path.value}` has more than {MAX_REAL_ROWS:,} rows",
                    path.span,
                    "no data" if not table else "too large",
                    help=["a header row, then one row per real respondent or group"],
                )
            )
            return None
        header = [cell.strip() for cell in table[0]]
        rows = [row + [""] * (len(header) - len(row)) for row in table[1:]]
        return header, rows, hashlib.sha256(data).hexdigest()

    def column_index(self, column: ast.Str, header: list[str]) -> int | None:
        if column.value in header:
            return header.index(column.value)
        check_unknown_label(self.ctx, column.value, column.span, "a column of the file", header)
        return None

    def report_missing_column(self, statement: ast.ValidateStmt, header: list[str]) -> None:
        first = header[0] if header else "COLUMN"
        self.ctx.report(
            diag.error(
                codes.DATA_FILE,
                f"`validate {statement.field.name} against` needs the column of real answers",
                statement.path.span,
                "which column?",
                help=[f'name it: `{_statement_head(statement)} column "{first}"`'],
                notes=["the file's columns are " + ", ".join(f"`{h}`" for h in header)],
            )
        )

    def real_values(
        self, statement: ast.ValidateStmt, spec: m.FieldSpec, cells: list[str]
    ) -> list[str | float] | None:
        """The real answers in the field's type; empty cells are missing answers."""
        values: list[str | float] = []
        bad: list[tuple[int, str]] = []
        for line, cell in enumerate(cells, start=2):
            cell = cell.strip()
            if not cell:
                continue
            value = _real_value(spec, cell)
            if value is None:
                bad.append((line, cell))
            else:
                values.append(value)
        if bad:
            line, cell = bad[0]
            assert statement.column is not None
            self.ctx.report(
                diag.error(
                    codes.DATA_FILE,
                    f"{len(bad)} value(s) of column `{statement.column.value}` are not "
                    f"answers to `{spec.name}`; the first, on line {line}: {cell!r}",
                    statement.column.span,
                    f"not {_kind_words(spec)}",
                    help=[f"the column must hold {_kind_words(spec)} (empty cells are missing)"],
                )
            )
            return None
        if len(values) < 2:
            self.ctx.report(
                diag.error(
                    codes.DATA_FILE,
                    f"column `{statement.column.value if statement.column else ''}` holds "
                    f"{len(values)} answer(s); a comparison needs at least 2",
                    statement.path.span,
                    "too few real answers",
                    help=["add the real answers to the file"],
                )
            )
            return None
        return values

    def margins(
        self, statement: ast.ValidateStmt, header: list[str], rows: list[list[str]]
    ) -> tuple[str, list[tuple[str, float]]] | None:
        """Real group margins: a column named like the grouping, and `mean` or `share`."""
        assert statement.by is not None
        by = statement.by.name
        problems = []
        if by not in header:
            problems.append(f"a column `{by}` naming the groups")
        statistic = next((name for name in MARGIN_STATISTICS if name in header), None)
        if statistic is None:
            problems.append("a column `mean` or `share` with the real value of each group")
        if problems:
            self.ctx.report(
                diag.error(
                    codes.DATA_FILE,
                    f"`{statement.path.value}` needs " + " and ".join(problems),
                    statement.path.span,
                    "not group margins",
                    help=[f"write one row per group: `{by},mean`, then `group_a,3.4`"],
                    notes=["the file's columns are " + ", ".join(f"`{h}`" for h in header)],
                )
            )
            return None
        assert statistic is not None
        group, value = header.index(by), header.index(statistic)
        margins: list[tuple[str, float]] = []
        for line, row in enumerate(rows, start=2):
            try:
                number = float(row[value].strip().rstrip("%"))
            except ValueError:
                self.ctx.report(
                    diag.error(
                        codes.DATA_FILE,
                        f"line {line} of `{statement.path.value}`: {row[value]!r} is not a number",
                        statement.path.span,
                        "not a number",
                        help=[f"the `{statistic}` column holds numbers"],
                    )
                )
                return None
            if statistic == "share" and row[value].strip().endswith("%"):
                number /= 100
            margins.append((row[group].strip(), number))
        if len(margins) < 2:
            self.ctx.report(
                diag.error(
                    codes.DATA_FILE,
                    f"`{statement.path.value}` holds {len(margins)} group(s); "
                    "a correlation needs at least 2",
                    statement.path.span,
                    "too few groups",
                    help=["add a row per group"],
                )
            )
            return None
        return statistic, margins


def check_not_a_number(
    ctx: Context, aggregate: ast.Aggregate, spec: m.FieldSpec, value: ast.Value | None
) -> None:
    ctx.report(
        diag.error(
            codes.WRONG_TYPE,
            f"`{spec.name}` is a number; compare it with a number",
            value.span if value is not None else aggregate.span,
            "not a number",
            help=[f"for example `{aggregate.function.name}({spec.name} >= 4)`"],
        )
    )


def _real_value(spec: m.FieldSpec, cell: str) -> str | float | None:
    if spec.kind in NUMERIC:
        try:
            number = float(cell)
        except ValueError:
            return None
        return number
    if spec.kind == "bool":
        folded = cell.casefold()
        if folded in ("true", "yes", "1"):
            return "true"
        if folded in ("false", "no", "0"):
            return "false"
        return None
    return cell if cell in spec.members else None


def _kind_words(spec: m.FieldSpec) -> str:
    if spec.kind in NUMERIC:
        return "numbers"
    if spec.kind == "bool":
        return "true/false (or yes/no, 1/0)"
    return "members of the enum (" + ", ".join(spec.members[:10]) + ")"


def _filter_text(filter_: ast.Filter) -> str:
    text = filter_.subject.dotted
    if filter_.comparator is not None and filter_.value is not None:
        shown = _member(filter_.value)
        if shown is None and isinstance(filter_.value, ast.Number):
            shown = filter_.value.raw or str(filter_.value.value)
        text += f" {filter_.comparator} {shown}"
    return text


def _statement_head(statement: ast.ValidateStmt) -> str:
    return f'validate {statement.field.name} against "{statement.path.value}"'
