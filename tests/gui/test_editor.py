"""The profile editor panel with a real controller, real profiles and a temporary user profile
directory (tests/gui/conftest.py): form edits round-trip, problems are underlined and listed,
the library actions, and nothing unsaved is dropped without asking."""
from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QEvent, QPoint, QSettings, Qt
from PySide6.QtGui import QHelpEvent, QTextCharFormat
from PySide6.QtWidgets import QApplication, QInputDialog, QMessageBox, QToolTip

from stackpanel.core.profiles.edit import ProfileDocument
from stackpanel.core.profiles.library import ProfileEntry, create_profile, list_profiles, user_dir
from stackpanel.core.profiles.schema import APP_SERVER_KINDS
from stackpanel.qt import editor as editor_module
from stackpanel.qt.controller import LoadedProfile, StackController
from stackpanel.qt.editor import ProfileEditor

pytestmark = pytest.mark.gui

BUILTINS = [e for e in list_profiles() if e.group == "built-in"]


@pytest.fixture
def editor(qtbot: Any) -> Iterator[ProfileEditor]:
    c = StackController()
    ed = ProfileEditor(c)
    qtbot.addWidget(ed)
    ed.resize(1200, 700)
    ed.show()
    yield ed
    qtbot.waitUntil(lambda: not c.reads.busy, timeout=10_000)  # no check left to land on a closed panel
    c.shutdown()


class Answers:
    """What the user types into the dialogs, in order; every question asked is recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str | None] = []
        self.items: list[str] = []
        self.yes_no: list[bool] = []
        self.unsaved: list[QMessageBox.StandardButton] = []
        self.asked: list[str] = []
        self.offered: list[str] = []
        monkeypatch.setattr(QInputDialog, "getText", self._text)
        monkeypatch.setattr(QInputDialog, "getItem", self._item)
        monkeypatch.setattr(QMessageBox, "question", self._question)
        monkeypatch.setattr(QMessageBox, "warning", lambda _p, title, text: self.asked.append(f"warning: {text}"))
        monkeypatch.setattr(editor_module, "ask", self._unsaved)

    def _text(self, _parent: Any, title: str, _label: str, _mode: Any, default: str) -> tuple[str, bool]:
        self.asked.append(f"{title} [{default}]")
        name = self.names.pop(0)
        return (name if name is not None else "", name is not None)

    def _item(self, _parent: Any, title: str, _label: str, items: list[str], *_a: Any) -> tuple[str, bool]:
        self.asked.append(title)
        self.offered = list(items)
        return self.items.pop(0), True

    def _question(self, _parent: Any, title: str, text: str, *_a: Any) -> QMessageBox.StandardButton:
        self.asked.append(f"{title}: {text}")
        return QMessageBox.StandardButton.Yes if self.yes_no.pop(0) else QMessageBox.StandardButton.No

    def _unsaved(self, box: QMessageBox) -> QMessageBox.StandardButton:
        self.asked.append(box.text())
        return self.unsaved.pop(0)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Answers:
    return Answers(monkeypatch)


def open_and_check(qtbot: Any, ed: ProfileEditor, entry: ProfileEntry | None, text: str | None = None) -> None:
    ed.last_check = None
    ed.open_entry(entry, text)
    qtbot.waitUntil(lambda: ed.last_check is not None, timeout=10_000)


def wait_for_check(qtbot: Any, ed: ProfileEditor) -> None:
    ed.last_check = None
    qtbot.waitUntil(lambda: ed.last_check is not None, timeout=10_000)


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: e.name)
def test_round_trip_worker_count_through_the_form_saved_as_user_profile_changes_that_line_only(
        qtbot: Any, editor: ProfileEditor, answers: Answers, entry: ProfileEntry) -> None:
    open_and_check(qtbot, editor, entry)
    assert editor.last_check is not None and editor.last_check.ok
    node = next(n for n, kind in ProfileDocument(editor.text()).node_kinds().items() if kind in APP_SERVER_KINDS)
    editor.form.node.setCurrentText(node)
    workers = editor.form.workers.value()
    editor.form.workers.selectAll()
    qtbot.keyClicks(editor.form.workers, str(workers + 1))  # typed, as a user does
    assert editor.form.workers.value() == workers + 1 and editor.dirty
    answers.names.append(f"{entry.name}-mine")
    assert editor.save()
    saved = user_dir() / f"{entry.name}-mine.yaml"
    assert editor.entry is not None and editor.entry.path == saved and not editor.dirty
    diff = [line for line in difflib.unified_diff(entry.path.read_text().splitlines(), saved.read_text().splitlines(),
                                                  lineterm="", n=0) if not line.startswith(("---", "+++", "@@"))]
    old = [f"-    workers: {workers}"] if diff[0].startswith("-") else []  # a node without the key gets one
    assert diff == old + [f"+    workers: {workers + 1}"]
    assert "is read-only" in answers.asked[0]  # a built-in offers a copy


def test_problems_are_underlined_with_message_and_fix_and_a_click_jumps_to_the_line(
        qtbot: Any, editor: ProfileEditor) -> None:
    entry = next(e for e in BUILTINS if e.name == "nginx-uvicorn")
    text = entry.path.read_text()
    bad = text.replace("port: 8000", "port: 8080").replace("workers: 2", "workers: lots")
    open_and_check(qtbot, editor, entry, bad)
    problems = editor.last_check.problems  # type: ignore[union-attr]
    lines = bad.splitlines()
    workers_line = next(i for i, line in enumerate(lines, 1) if "workers: lots" in line)
    port_line = next(i for i, line in enumerate(lines, 1) if line.strip() == "port: 8080" and i > workers_line - 4)
    assert {p.line for p in problems} == {workers_line, port_line}  # both at once
    underlined = {s.cursor.blockNumber() + 1: s for s in editor.text_edit.extraSelections()}
    assert set(underlined) == {workers_line, port_line}
    sel = underlined[workers_line]
    assert sel.format.underlineStyle() == QTextCharFormat.UnderlineStyle.WaveUnderline
    assert sel.cursor.selectedText() == "lots"
    block = editor.text_edit.document().findBlockByNumber(workers_line - 1)
    pos = editor.text_edit.blockBoundingGeometry(block).translated(editor.text_edit.contentOffset()).center()
    tip = editor.text_edit.tooltip_at(QPoint(int(pos.x()), int(pos.y())))
    assert "valid integer" in tip and "fix: write a whole number" in tip
    at = editor.text_edit.viewport().mapTo(editor.text_edit, QPoint(int(pos.x()), int(pos.y())))
    QApplication.sendEvent(editor.text_edit, QHelpEvent(QEvent.Type.ToolTip, at, editor.text_edit.mapToGlobal(at)))
    assert QToolTip.text() == tip  # what hovering the line shows
    # click the port problem in the list: the cursor goes to its line
    row = next(i for i in range(editor.problem_list.count())
               if editor.problem_list.item(i).data(Qt.ItemDataRole.UserRole)[0] == port_line)
    editor.text_edit.moveCursor(editor.text_edit.textCursor().MoveOperation.Start)
    rect = editor.problem_list.visualItemRect(editor.problem_list.item(row))
    qtbot.mouseClick(editor.problem_list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert editor.text_edit.textCursor().blockNumber() + 1 == port_line
    # fixing the text clears both after the debounce, with no save in between
    editor.text_edit.setPlainText(text)
    wait_for_check(qtbot, editor)
    assert editor.text_edit.extraSelections() == [] and editor.last_check.ok  # type: ignore[union-attr]
    assert "no problems" in editor.problem_list.item(0).text()


def test_the_preview_draws_the_edited_text_before_it_is_saved(qtbot: Any, editor: ProfileEditor) -> None:
    entry = next(e for e in BUILTINS if e.name == "uvicorn-workers")
    open_and_check(qtbot, editor, entry)
    assert set(editor.preview.nodes) == {"app"}
    editor.form.add_kind.setCurrentText("nginx")
    editor.form.add_node.click()
    wait_for_check(qtbot, editor)
    assert set(editor.preview.nodes) == {"app", "edge"} and editor.preview.profile.entry == "edge"  # type: ignore[union-attr]
    assert editor.preview.edge("edge", "app") is not None
    assert entry.path.read_text() == editor._saved_text  # nothing written


def test_new_duplicate_rename_delete_on_the_user_profile_dir(qtbot: Any, editor: ProfileEditor,
                                                           answers: Answers) -> None:
    changed: list[str] = []
    editor.libraryChanged.connect(changed.append)
    entry = next(e for e in BUILTINS if e.name == "nginx-uvicorn")
    open_and_check(qtbot, editor, entry)
    assert not editor.act_rename.isEnabled() and not editor.act_delete.isEnabled()  # built-in
    # New, from another profile than the one shown
    answers.items.append("Copy of uvicorn-dev (built-in)")
    answers.names.append("from-dev")
    editor.new_profile()
    assert (user_dir() / "from-dev.yaml").read_text() == next(e for e in BUILTINS if e.name == "uvicorn-dev"
                                                              ).path.read_text()
    assert answers.offered[:2] == ["Blank", "Copy of nginx-uvicorn (built-in)"]  # the one shown first
    (user_dir() / "from-dev.yaml").unlink()
    # New, blank
    answers.items.append("Blank")
    answers.names.append("fresh")
    editor.new_profile()
    fresh = user_dir() / "fresh.yaml"
    assert fresh.is_file() and editor.entry is not None and editor.entry.path == fresh
    wait_for_check(qtbot, editor)
    assert editor.last_check.ok and editor.act_rename.isEnabled()  # type: ignore[union-attr]
    # Duplicate takes the text as it is, unsaved changes included; the original keeps its text
    editor.form.workers.setValue(3)
    answers.names.append("fresh-copy")
    editor.duplicate_profile()
    assert "workers: 3" in (user_dir() / "fresh-copy.yaml").read_text()
    assert "workers: 1" in fresh.read_text()
    # Rename onto a taken name asks; No keeps both
    answers.names.append("fresh")
    answers.yes_no.append(False)
    editor.rename_profile()
    assert "already exists" in answers.asked[-1]
    assert (user_dir() / "fresh-copy.yaml").is_file() and editor.entry.name == "fresh-copy"
    answers.names.append("renamed")
    editor.rename_profile()
    assert not (user_dir() / "fresh-copy.yaml").exists() and editor.entry.path == user_dir() / "renamed.yaml"
    # a name with a path in it is refused with the reason
    answers.names.append("../outside")
    editor.rename_profile()
    assert "cannot name a profile" in answers.asked[-1] and editor.entry.name == "renamed"
    # Delete asks first
    answers.yes_no += [False, True]
    editor.delete_profile()
    assert (user_dir() / "renamed.yaml").is_file()
    editor.delete_profile()
    assert not (user_dir() / "renamed.yaml").exists() and editor.entry is None
    assert sorted(p.name for p in user_dir().iterdir()) == ["fresh.yaml"]
    assert changed == ["from-dev", "fresh", "fresh-copy", "renamed", ""]


def test_ctrl_s_in_the_text_saves_a_user_profile(qtbot: Any, editor: ProfileEditor) -> None:
    mine = create_profile("mine", BUILTINS[0].path.read_text())
    open_and_check(qtbot, editor, mine)
    editor.text_edit.setFocus()
    editor.text_edit.appendPlainText("# saved with the keyboard")
    qtbot.keyClick(editor.text_edit, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert mine.path.read_text().rstrip().endswith("# saved with the keyboard") and not editor.dirty


def test_builtin_is_read_only_and_saving_offers_a_copy(qtbot: Any, editor: ProfileEditor, answers: Answers) -> None:
    entry = next(e for e in BUILTINS if e.name == "uvicorn-dev")
    before = entry.path.read_text()
    open_and_check(qtbot, editor, entry)
    assert "read-only" in editor.title.text()
    editor.form.port.setValue(8123)
    editor.form.port.editingFinished.emit()
    answers.names.append(None)  # cancelled: nothing written, still dirty
    assert not editor.save() and editor.dirty
    answers.names.append("dev")
    assert editor.save()
    assert entry.path.read_text() == before
    assert "port: 8123" in (user_dir() / "dev.yaml").read_text()
    assert editor.entry is not None and not editor.entry.builtin and editor.act_delete.isEnabled()


def test_switching_profiles_with_unsaved_changes_asks(qtbot: Any, editor: ProfileEditor, answers: Answers) -> None:
    mine = create_profile("mine", BUILTINS[0].path.read_text())
    open_and_check(qtbot, editor, mine)
    editor.text_edit.appendPlainText("# a note")
    other = next(e for e in BUILTINS if e.name == "uvicorn-workers")
    loaded = LoadedProfile(other.name, other.path, 0)
    answers.unsaved.append(QMessageBox.StandardButton.Cancel)
    editor._controller.profileLoaded.emit(loaded)
    assert editor.entry == mine and editor.text().endswith("# a note")  # kept
    assert "not saved" in answers.asked[-1]
    changed: list[str] = []
    editor.libraryChanged.connect(changed.append)
    answers.unsaved.append(QMessageBox.StandardButton.Save)
    editor._controller.profileLoaded.emit(loaded)
    assert changed == ["uvicorn-workers"]  # the list keeps the profile picked, not the one saved
    assert mine.path.read_text().endswith("# a note\n") or mine.path.read_text().endswith("# a note")
    assert editor.entry == other
    editor.text_edit.appendPlainText("# dropped")
    answers.unsaved.append(QMessageBox.StandardButton.Discard)
    assert editor.may_close()


def test_the_window_asks_before_closing_over_unsaved_edits(qtbot: Any, settings: QSettings,
                                                          answers: Answers) -> None:
    from stackpanel.qt.main_window import MainWindow

    w = MainWindow(initial_profile="uvicorn-workers", settings=settings)
    qtbot.addWidget(w)
    w.show()
    ed = w.panel(ProfileEditor)
    qtbot.waitUntil(lambda: ed.entry is not None and ed.entry.name == "uvicorn-workers", timeout=10_000)
    ed.text_edit.appendPlainText("# unsaved")
    answers.unsaved.append(QMessageBox.StandardButton.Cancel)
    w.close()
    assert w.isVisible() and len(answers.asked) == 1
    # saving a copy puts it in the window's profile list, selected and loaded
    answers.names.append("workers-copy")
    assert ed.save()
    qtbot.waitUntil(lambda: w.controller.loaded is not None and w.controller.loaded.name == "workers-copy",
                    timeout=10_000)
    assert w.profile_list.current_name() == "workers-copy" and not ed.dirty
    w.close()
    assert not w.isVisible() and len(answers.asked) == 2  # the save-as name only; nothing unsaved


def test_a_copy_offers_to_make_its_relative_paths_absolute(qtbot: Any, editor: ProfileEditor,
                                                          answers: Answers) -> None:
    entry = next(e for e in BUILTINS if e.name == "nginx-split")
    open_and_check(qtbot, editor, entry)
    assert editor.paths_bar.isHidden()  # where it lives, its paths are right
    answers.names.append("split")
    editor.duplicate_profile()
    wait_for_check(qtbot, editor)
    assert not editor.paths_bar.isHidden() and "../apps/site" in editor.paths_note.text()
    assert any("static directory" in p.message for p in editor.last_check.problems)  # type: ignore[union-attr]
    editor.act_rebase.click()
    wait_for_check(qtbot, editor)
    assert editor.last_check.ok and editor.paths_bar.isHidden() and editor.dirty  # type: ignore[union-attr]
    assert editor.save() and "../apps/site" not in (user_dir() / "split.yaml").read_text()


def test_a_form_edit_replaces_only_its_lines_keeps_the_cursor_and_undoes_in_one_step(
        qtbot: Any, editor: ProfileEditor) -> None:
    entry = next(e for e in BUILTINS if e.name == "nginx-tls-uvicorn")
    text = entry.path.read_text()
    open_and_check(qtbot, editor, entry)
    cursor = editor.text_edit.textCursor()
    cursor.setPosition(editor.text_edit.document().findBlockByNumber(2).position() + 3)  # line 3, column 4
    editor.text_edit.setTextCursor(cursor)
    editor.form.node.setCurrentText("app")
    editor.form.workers.setValue(5)
    editor.form.module.setText("stackpanel.apps.fastapi_demo:app")  # unchanged: no edit
    editor.form.module.editingFinished.emit()
    after = editor.text_edit.textCursor()
    assert (after.blockNumber(), after.positionInBlock()) == (2, 3)
    assert editor.text().count("\n") == text.count("\n") and "workers: 5" in editor.text()
    editor.text_edit.undo()
    assert editor.text() == text and not editor.dirty


def test_the_highlighter_tells_keys_values_and_comments_apart(qtbot: Any, editor: ProfileEditor) -> None:
    mine = create_profile("mine", "version: 1  # the format\nname: 'quoted # not a comment'\n")
    open_and_check(qtbot, editor, mine)
    doc = editor.text_edit.document()

    def colour_at(line: int, column: int) -> str:
        ranges = doc.findBlockByNumber(line).layout().formats()  # kept alive while read
        return next(r.format.foreground().color().name() for r in ranges if r.start <= column < r.start + r.length)

    highlighter = editor.text_edit.highlighter
    rules = {f.foreground().color().name() for _e, f in [*highlighter.rules, (None, highlighter.comment)]}
    key, number, string, comment = (colour_at(0, 0), colour_at(0, 9), colour_at(1, 8), colour_at(0, 13))
    assert len({key, number, string, comment}) == 4 and {key, number, string, comment} == rules
    assert colour_at(1, 20) == string  # a # inside quotes is text
