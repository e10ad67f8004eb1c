"""The plans panel's form: one page per registered plan, built from its signature and numpydoc docstring.

The form does not parse values itself: it turns its fields into the options of
``nanoscope scan PLAN`` and parses them with the very parser the command line uses
(:func:`nanoscope_daq.scan_cli.add_plan_parsers`), so a type error reads the same here
as in a terminal. The plan's own checks (:func:`~nanoscope_daq.plans.registry.check_plan_call`)
run before anything is queued, by the console's queue client.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..config import Config
from ..errors import RefusedInput
from ..plans import PLANS
from ..plans.dose import DoseLedger
from ..plans.registry import parameter_help
from ..plans.subject import SUBJECT_FIELDS
from ..scan_cli import SKIPPED_PARAMETERS, add_plan_parsers, plan_kwargs


class FormRefused(RefusedInput):
    """A field the plan's parser refuses (wrong type, not JSON); the message is the parser's."""


class _RaisingParser(argparse.ArgumentParser):
    """The command line's parser, raising instead of printing and exiting."""

    def error(self, message: str) -> None:
        raise FormRefused(message)


def dose_line(config: Config, subject_id: str) -> str:
    """The subject's dose so far (the dose ledger every scan records into) against the configured budget."""
    used = DoseLedger(config.dose.ledger).delivered_gy(subject_id)
    budget = config.dose.budget_gy
    return (f"dose of {subject_id}: {used:.3f} Gy used of {budget:g} Gy, {max(budget - used, 0.0):.3f} Gy remaining "
            "(a plan that would pass the budget is refused by its own check)")


def plan_parsers() -> dict[str, argparse.ArgumentParser]:
    """``nanoscope scan``'s parser of each registered plan, by plan name."""
    root = _RaisingParser(prog="nanoscope gui")
    add_plan_parsers(root, lambda parser: None, lambda *args: 0)
    (subparsers,) = [action for action in root._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


class PlanPage(QWidget):
    """The fields of one plan: a check box per flag, a line per other parameter (empty: the default)."""

    def __init__(self, name: str, plan: Callable, parser: argparse.ArgumentParser,
                 dose: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.dose = dose
        self.dose_label = QLabel("")
        self.dose_label.setWordWrap(True)
        self.name = name
        self.plan = plan
        self.parser = parser
        self.fields: dict[str, QLineEdit | QCheckBox] = {}
        self.subject_fields: dict[str, QLineEdit] = {}
        meanings = parameter_help(plan)
        hints = plan.__annotations__
        doc = (inspect.getdoc(plan) or name).split("\n\n")[0]
        layout = QVBoxLayout(self)
        summary = QLabel(" ".join(doc.split()))
        summary.setWordWrap(True)
        layout.addWidget(summary)
        form = QFormLayout()
        layout.addLayout(form)
        for parameter in inspect.signature(plan).parameters.values():
            if parameter.name in SKIPPED_PARAMETERS:
                continue
            annotation = str(hints.get(parameter.name, "str"))
            tip = f"{meanings.get(parameter.name, '')} [{annotation}]"
            if parameter.name == "subject":
                layout.addWidget(self._subject_box(tip))
                continue
            default = parameter.default
            if annotation.startswith("bool"):
                field: QLineEdit | QCheckBox = QCheckBox()
                field.setChecked(bool(default) if default is not inspect.Parameter.empty else False)
            else:
                field = QLineEdit()
                field.setPlaceholderText("required" if default is inspect.Parameter.empty else f"{default!r}")
            field.setToolTip(tip)
            self.fields[parameter.name] = field
            form.addRow(parameter.name, field)
        layout.addStretch(1)

    def _subject_box(self, tip: str) -> QGroupBox:
        box = QGroupBox("subject")
        box.setToolTip(tip)
        form = QFormLayout(box)
        for key in SUBJECT_FIELDS:
            self.subject_fields[key] = QLineEdit()
            form.addRow(key, self.subject_fields[key])
        self.subject_fields["subject_id"].editingFinished.connect(self.show_dose)
        form.addRow(self.dose_label)
        return box

    def show_dose(self) -> None:
        """The dose line of the subject named in the form (nothing without one)."""
        subject_id = self.subject_fields["subject_id"].text().strip()
        self.dose_label.setText(self.dose(subject_id) if self.dose is not None and subject_id else "")

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the fields from ``values`` (a ``subject`` mapping fills the subject's fields)."""
        for name, value in values.items():
            if name == "subject":
                for key, item in value.items():
                    self.subject_fields[key].setText(str(item))
                self.show_dose()
            elif isinstance(self.fields[name], QCheckBox):
                self.fields[name].setChecked(bool(value))
            else:
                self.fields[name].setText(" ".join(map(str, value)) if isinstance(value, list | tuple) else str(value))

    def argv(self) -> list[str]:
        """The fields as ``nanoscope scan`` options (empty fields left out: the plan's default)."""
        words: list[str] = []
        for name, field in self.fields.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(field, QCheckBox):
                words.append(flag if field.isChecked() else "--no-" + flag[2:])
            elif field.text().strip():
                words += [flag, *field.text().split()] if "Sequence" in str(self.plan.__annotations__.get(name)) \
                    else [flag, field.text().strip()]
        subject = {key: field.text().strip() for key, field in self.subject_fields.items() if field.text().strip()}
        if subject:
            if "day" in subject:
                subject["day"] = _number(subject["day"])
            words += ["--subject", json.dumps(subject)]
        return words

    def kwargs(self) -> dict[str, Any]:
        """The plan's keyword arguments from the fields; :class:`FormRefused` with the parser's message."""
        return plan_kwargs(self.plan, self.parser.parse_args(self.argv()))


def _number(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text  # the plan names what a day must be
    return int(value) if value.is_integer() else value


class PlanForm(QWidget):
    """A plan chooser and its page; emits :attr:`submitted` (plan name, keyword arguments) when Queue is pressed.

    Parameters
    ----------
    dose : Callable[[str], str], optional
        The dose line shown under a subject's id (:func:`dose_line` with the console's configuration).
    """

    submitted = Signal(str, dict)

    def __init__(self, dose: Callable[[str], str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        parsers = plan_parsers()
        self.chooser = QComboBox()
        self.pages = QStackedWidget()
        self.page: dict[str, PlanPage] = {}
        for name, plan in PLANS.items():
            self.page[name] = PlanPage(name, plan, parsers[name], dose)
            self.chooser.addItem(name)
            self.pages.addWidget(self.page[name])
        self.chooser.currentTextChanged.connect(lambda name: self.pages.setCurrentWidget(self.page[name]))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.pages)
        self.queue_button = QPushButton("Check and queue")
        self.queue_button.clicked.connect(self.submit)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.chooser)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.queue_button)
        layout.addWidget(self.message)

    def choose(self, name: str) -> PlanPage:
        """Show the page of plan ``name`` and return it."""
        self.chooser.setCurrentText(name)
        return self.page[name]

    def submit(self) -> None:
        """Parse the current page; a refusal is shown, else :attr:`submitted` is emitted."""
        page = self.page[self.chooser.currentText()]
        try:
            kwargs = page.kwargs()
        except FormRefused as exc:
            self.show_message(f"refused: {exc}", error=True)
            return
        if page.subject_fields:
            page.show_dose()
        self.show_message(f"checking {page.name} against the instrument…")
        self.submitted.emit(page.name, kwargs)

    def show_message(self, text: str, error: bool = False) -> None:
        """A line under the form: the plan's refusal (red) or what happened to the item."""
        self.message.setText(text)
        self.message.setStyleSheet("color: #d32f2f; font-weight: bold;" if error else "")
