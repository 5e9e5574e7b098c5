"""The profile editor panel: the YAML text with every problem underlined, a form for the common
changes, the library actions (New, Duplicate, Rename, Delete, Save) and a preview of the graph.

The text is the one source of truth: the form writes through
:class:`~stackpanel.core.profiles.edit.ProfileDocument` (comments and layout kept) and reads its
values back from the text. Validation runs off the GUI thread on the controller's read queue (the
module checks may start an interpreter), a short debounce after the last keystroke; the newest
check wins. The editor follows the profile the controller loads and asks before unsaved changes
would be dropped (switching profiles, closing the window).
"""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import shiboken6
from PySide6.QtCore import QEvent, QPoint, QRegularExpression, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QFont,
    QFontDatabase,
    QHelpEvent,
    QKeySequence,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTextEdit,
    QToolBar,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.errors import ProfileProblem
from stackpanel.core.profiles.edit import EditError, ProfileDocument
from stackpanel.core.profiles.library import (
    LibraryError,
    ProfileEntry,
    ProfileExists,
    blank_profile_text,
    copy_name,
    create_profile,
    delete_profile,
    entry_for_path,
    in_user_dir,
    list_profiles,
    rename_profile,
    save_profile,
)
from stackpanel.core.profiles.loader import ProfileCheck, collect_problems
from stackpanel.core.profiles.schema import APP_SERVER_KINDS, NODE_MODELS, PROXY_KINDS
from stackpanel.core.supervise.ports import check_ports_free
from stackpanel.qt.controller import LoadedProfile, StackController
from stackpanel.qt.graph_view import GraphView

#: Validation waits this long after the last keystroke (a check of a built-in takes ~5-30 ms).
DEBOUNCE_MS = 300
PROBLEM_COLOUR = QColor("#e5534b")
LINE_ROLE = Qt.ItemDataRole.UserRole


class YamlHighlighter(QSyntaxHighlighter):
    """Keys, strings, numbers and constants, comments: enough to read a profile at a glance.
    Mid-tone colours that read on light and dark backgrounds."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)

        def fmt(colour: str, bold: bool = False, italic: bool = False) -> QTextCharFormat:
            f = QTextCharFormat()
            f.setForeground(QColor(colour))
            if bold:
                f.setFontWeight(QFont.Weight.Bold)
            f.setFontItalic(italic)
            return f

        # later rules paint over earlier ones; the comment (found outside quotes) over all
        self.rules: list[tuple[QRegularExpression, QTextCharFormat]] = [
            (QRegularExpression(r"^\s*(?:-\s+)?[^\s#:'\"][^:#]*(?=:(\s|$))"), fmt("#3b82c4", bold=True)),
            (QRegularExpression(r"(?<=[:\-\[,{]\s)(-?\d+(\.\d+)?|true|false|yes|no|null|~)(?=\s*($|[,\]}#]))"),
             fmt("#b0651b")),
            (QRegularExpression(r"\"(\\.|[^\"\\])*\"|'([^']|'')*'"), fmt("#3f9a50")),
        ]
        self.comment = fmt("#8a8f98", italic=True)

    def highlightBlock(self, text: str) -> None:
        for expression, f in self.rules:
            it = expression.globalMatch(text)
            while it.hasNext():
                m = it.next()
                self.setFormat(m.capturedStart(), m.capturedLength(), f)
        start = comment_start(text)
        if start is not None:
            at = len(text[:start].encode("utf-16-le")) // 2  # Qt counts UTF-16 units
            self.setFormat(at, len(text.encode("utf-16-le")) // 2 - at, self.comment)


def comment_start(line: str) -> int | None:
    """Where a YAML comment starts: a `#` at the start or after a blank, outside quotes."""
    quote, escaped = "", False
    for i, c in enumerate(line):
        before = line[i - 1] if i else " "
        if quote:
            if escaped:
                escaped = False
            elif c == "\\" and quote == '"':
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "'\"" and before in " \t:[{,-":
            quote = c
        elif c == "#" and before in " \t":
            return i
    return None


class YamlEdit(QPlainTextEdit):
    """The text with each problem underlined at its line; hovering a line shows its problems."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("profile-text")
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setTabChangesFocus(False)
        self.highlighter = YamlHighlighter(self.document())
        self.problems: list[ProfileProblem] = []

    def show_problems(self, problems: list[ProfileProblem]) -> None:
        self.problems = problems
        selections: list[QTextEdit.ExtraSelection] = []
        for p in problems:
            if p.line < 1 or p.line > self.document().blockCount():
                continue
            block = self.document().findBlockByNumber(p.line - 1)
            cursor = QTextCursor(block)
            start = min(max(p.column - 1, 0), max(len(block.text()) - 1, 0))
            cursor.setPosition(block.position() + start)
            cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
            sel = QTextEdit.ExtraSelection()
            sel.cursor = cursor  # type: ignore[misc]
            f = QTextCharFormat()
            f.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
            f.setUnderlineColor(PROBLEM_COLOUR)
            f.setToolTip(problem_text(p))
            sel.format = f  # type: ignore[misc]
            selections.append(sel)
        self.setExtraSelections(selections)

    def problems_at_line(self, line: int) -> list[ProfileProblem]:
        return [p for p in self.problems if p.line == line]

    def tooltip_at(self, pos: QPoint) -> str:
        line = self.cursorForPosition(pos).blockNumber() + 1
        return "\n\n".join(problem_text(p) for p in self.problems_at_line(line))

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.ToolTip and isinstance(e, QHelpEvent):
            text = self.tooltip_at(self.viewport().mapFrom(self, e.pos()))
            if text:
                QToolTip.showText(e.globalPos(), text, self)
            else:
                QToolTip.hideText()
            return True
        return super().event(e)

    def go_to(self, line: int, column: int = 1) -> None:
        block = self.document().findBlockByNumber(max(line - 1, 0))
        cursor = QTextCursor(block)
        cursor.setPosition(block.position() + min(max(column - 1, 0), len(block.text())))
        self.setTextCursor(cursor)
        self.centerCursor()
        self.setFocus()


def problem_text(p: ProfileProblem) -> str:
    where = f"line {p.line}, column {p.column}: " if p.line else ""
    return f"{where}{p.message}" + (f"\nfix: {p.hint}" if p.hint else "")


class ProblemList(QListWidget):
    """Every problem of the text; clicking one moves the cursor to its line."""

    jump = Signal(int, int)  # line, column

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("profile-problems")
        self.setWordWrap(True)
        self.setAlternatingRowColors(True)
        self.itemClicked.connect(self._jump)
        self.itemActivated.connect(self._jump)

    def show_problems(self, problems: list[ProfileProblem]) -> None:
        self.clear()
        if not problems:
            item = QListWidgetItem("✓ no problems: the profile can be started")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(item)
        for p in problems:
            item = QListWidgetItem(problem_text(p))
            item.setData(LINE_ROLE, (p.line, p.column))
            item.setToolTip(str(p))
            self.addItem(item)

    def _jump(self, item: QListWidgetItem) -> None:
        where = item.data(LINE_ROLE)
        if where and where[0]:
            self.jump.emit(*where)


class EditForm(QWidget):
    """The common changes, written into the text through ProfileDocument: a node's port, workers,
    app module and interpreter; a route of a proxy; a new node."""

    def __init__(self, editor: ProfileEditor) -> None:
        super().__init__(editor)
        self._editor = editor
        self._filling = False  # refresh() is setting the widgets: no edits
        self._shown_port: int | None = None
        self.node = QComboBox()
        self.node.setObjectName("form-node")
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.workers = QSpinBox()
        self.workers.setObjectName("form-workers")
        self.workers.setRange(1, 64)
        self.module = QLineEdit()
        self.module.setPlaceholderText("package.module:app")
        self.python = QLineEdit()
        self.python.setPlaceholderText("stackpanel's own Python (or a venv directory)")
        node_box = QGroupBox("Node")
        nf = QFormLayout(node_box)
        nf.addRow("node", self.node)
        nf.addRow("port", self.port)
        nf.addRow("workers", self.workers)
        nf.addRow("app module", self.module)
        nf.addRow("python", self.python)

        self.route_path = QLineEdit("/")
        self.route_to = QComboBox()
        self.route_to.setEditable(True)
        self.route_to.setToolTip("a node name, or a directory for static files")
        self.route_static = QComboBox()
        self.route_static.addItems(["to node", "static directory"])
        self.set_route = QPushButton("Set route")
        route_box = QGroupBox("Route of this proxy")
        rf = QFormLayout(route_box)
        rf.addRow("path", self.route_path)
        target = QHBoxLayout()
        target.addWidget(self.route_static)
        target.addWidget(self.route_to, 1)
        rf.addRow("goes", target)
        rf.addRow(self.set_route)
        self.route_box = route_box

        self.add_kind = QComboBox()
        self.add_kind.addItems(list(NODE_MODELS))
        self.add_behind = QComboBox()
        self.add_behind.setToolTip("an app server gets the route /<name> on this proxy")
        self.add_node = QPushButton("Add node")
        add_box = QGroupBox("New node")
        af = QFormLayout(add_box)
        af.addRow("kind", self.add_kind)
        af.addRow("behind", self.add_behind)
        af.addRow(self.add_node)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(node_box)
        lay.addWidget(route_box)
        lay.addWidget(add_box)
        lay.addStretch(1)

        self.node.currentTextChanged.connect(lambda _n: None if self._filling else self.refresh())
        # editingFinished also comes when the focus just leaves: only a changed port is written
        self.port.editingFinished.connect(lambda: self.port.value() != self._shown_port and self._apply(
            lambda d, n: d.set_port(n, self.port.value())))
        self.workers.valueChanged.connect(lambda v: self._apply(lambda d, n: d.set_workers(n, v)))
        self.module.editingFinished.connect(self._apply_module)
        self.python.editingFinished.connect(
            lambda: self._apply(lambda d, n: d.set_interpreter(n, self.python.text().strip() or None)))
        self.set_route.clicked.connect(self._set_route)
        self.add_node.clicked.connect(self._add_node)

    def refresh(self) -> None:
        """Show what the text says (after it changed, or another node was picked)."""
        doc = self._editor.document()
        try:
            kinds = doc.node_kinds()
        except EditError:
            self.setEnabled(False)  # the YAML does not parse: the problem list says where
            return
        self.setEnabled(True)
        self._filling = True
        try:
            current = self.node.currentText()
            if [self.node.itemText(i) for i in range(self.node.count())] != list(kinds):
                self.node.clear()
                self.node.addItems(list(kinds))
                if current in kinds:
                    self.node.setCurrentText(current)
            name = self.node.currentText()
            kind = kinds.get(name, "")
            proxies = [n for n, k in kinds.items() if k in PROXY_KINDS]
            self.add_behind.clear()
            self.add_behind.addItems(["(no route)", *proxies])
            self.route_to.clear()
            self.route_to.addItems([n for n in kinds if n != name])
            port, workers = doc.node_value(name, "port"), doc.node_value(name, "workers")
            self._shown_port = port if isinstance(port, int) and not isinstance(port, bool) else None
            self.port.setValue(self._shown_port or 1)
            self.workers.setValue(workers if isinstance(workers, int) and not isinstance(workers, bool) else 1)
            is_app = kind in APP_SERVER_KINDS
            for w in (self.module, self.python):
                w.setEnabled(is_app)
            self.module.setText(str(doc.node_value(name, "app", "module") or "") if is_app else "")
            self.python.setText(str(doc.node_value(name, "app", "python") or "") if is_app else "")
            self.route_box.setEnabled(kind in PROXY_KINDS)
        finally:
            self._filling = False

    def _apply(self, edit: Callable[[ProfileDocument, str], None]) -> bool:
        name = self.node.currentText()
        return not self._filling and bool(name) and self._editor.apply_edit(lambda d: edit(d, name))

    def _apply_module(self) -> None:
        if self.module.text().strip():  # an emptied box is not a module to write
            self._apply(lambda d, n: d.set_app_module(n, self.module.text()))

    def _set_route(self) -> None:
        name, target = self.node.currentText(), self.route_to.currentText().strip()
        if not target:
            return
        if self.route_static.currentIndex() == 0:
            self._editor.apply_edit(lambda d: d.set_route(name, self.route_path.text().strip(), to=target))
        else:
            self._editor.apply_edit(lambda d: d.set_route(name, self.route_path.text().strip(), static=target))

    def _add_node(self) -> None:
        kind = self.add_kind.currentText()
        behind = self.add_behind.currentText() if self.add_behind.currentIndex() > 0 else None
        added: list[str] = []
        self._editor.apply_edit(lambda d: added.append(d.add_node(kind, behind=behind, port_free=_port_free)))
        if added:
            self.node.setCurrentText(added[0])


def _check(text: str, file: Path, port_offset: int) -> tuple[ProfileCheck, ProfileDocument]:
    """Read-queue job: every problem of the text, and the text parsed for the form's next edit."""
    document = ProfileDocument(text)
    document.prepare()
    return collect_problems(text, file, port_offset), document


def _port_free(port: int) -> bool:
    """Nothing on this machine listens on the port (a bind test on loopback: microseconds)."""
    return not check_ports_free([("127.0.0.1", port)])


class ProfileEditor(QWidget):
    """The editor panel. ``libraryChanged(name)``: a profile was created, renamed, saved or deleted
    (name: the one to show, '' after a delete); the window refreshes its profile list with it."""

    libraryChanged = Signal(str)

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self.entry: ProfileEntry | None = None
        self._saved_text = ""
        self._check_seq = 0
        self.last_check: ProfileCheck | None = None
        self._document = ProfileDocument("")
        #: the profile the user picked while changes were unsaved: the list keeps it selected after a save
        self._switching_to: str | None = None

        self.toolbar = QToolBar("Profile")
        self.act_new = self._action("New…", self.new_profile, "create a profile, blank or from the one shown")
        self.act_duplicate = self._action("Duplicate…", self.duplicate_profile, "copy it into your profiles")
        self.act_rename = self._action("Rename…", self.rename_profile, "rename one of your profiles")
        self.act_delete = self._action("Delete", self.delete_profile, "delete one of your profiles")
        self.toolbar.addSeparator()
        self.act_save = self._action("Save", self.save, "write the text to the profile (a built-in: to a copy)")
        self.act_save.setShortcut(QKeySequence.StandardKey.Save)
        self.act_save.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.addAction(self.act_save)  # Ctrl+S while the focus is anywhere in the panel (the text)
        self.title = QLabel()
        self.title.setObjectName("editor-title")
        self.title.setWordWrap(True)

        self.text_edit = YamlEdit()
        self.problem_list = ProblemList()
        self.problem_list.jump.connect(self.text_edit.go_to)
        self.form = EditForm(self)
        self.preview = GraphView()  # not bound to the controller: it draws the text being edited
        self.preview.setObjectName("editor-preview")
        self.preview_note = QLabel()
        # a copy from another directory: its relative paths meant something there
        self._origin: Path | None = None
        self.paths_note = QLabel()
        self.paths_note.setWordWrap(True)
        self.act_rebase = QPushButton("Make them absolute")
        self.act_rebase.clicked.connect(self.rebase_paths)
        self.paths_bar = QWidget()
        pb = QHBoxLayout(self.paths_bar)
        pb.setContentsMargins(0, 0, 0, 0)
        pb.addWidget(self.paths_note, 1)
        pb.addWidget(self.act_rebase)
        self.paths_bar.hide()
        self.preview_note.setWordWrap(True)

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.text_edit)
        left.addWidget(self.problem_list)
        left.setSizes([420, 140])
        self.problem_list.setMinimumHeight(40)
        self.preview.setMinimumHeight(90)  # the tab shares the window's height with the main graph
        form_scroll = QScrollArea()
        form_scroll.setWidgetResizable(True)
        form_scroll.setWidget(self.form)
        form_scroll.setFrameShape(QFrame.Shape.NoFrame)
        preview_box = QWidget()
        pl = QVBoxLayout(preview_box)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.preview_note)
        pl.addWidget(self.preview, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(form_scroll)
        right.addWidget(preview_box)
        right.setSizes([300, 200])
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.toolbar)
        lay.addWidget(self.title)
        lay.addWidget(self.paths_bar)
        lay.addWidget(split, 1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.validate_now)
        self.text_edit.textChanged.connect(self._text_changed)
        controller.profileLoaded.connect(self._follow)
        controller.portOffsetChanged.connect(lambda _o: self._debounce.start())
        self._update_state()

    def _action(self, text: str, slot: Callable[[], object], tip: str) -> QAction:
        a = self.toolbar.addAction(text)
        a.setToolTip(tip)
        a.triggered.connect(lambda _checked=False: slot())
        return a

    # ------------------------------------------------------------------ the document

    def text(self) -> str:
        return self.text_edit.toPlainText()

    def document(self) -> ProfileDocument:
        """The text as a ProfileDocument (its parse is kept while the text stays the same)."""
        self._document.text = self.text()
        return self._document

    @property
    def dirty(self) -> bool:
        return self.entry is not None and self.text() != self._saved_text

    def open_entry(self, entry: ProfileEntry | None, text: str | None = None) -> None:
        """Show `entry` (its file's text unless `text` is given): no unsaved changes afterwards."""
        self.entry = entry
        self._origin = None
        if entry is not None and text is None:
            try:
                # a few KB in the user's config dir, read when asked for (as the list reads its directories)
                text = entry.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                text = ""
                self.preview_note.setText(f"cannot read {entry.path}: {exc}")
        self.text_edit.setPlainText(text or "")
        self._saved_text = self.text()  # as the editor holds it (line ends normalised): not a change
        self.validate_now()

    def _follow(self, loaded: LoadedProfile) -> None:
        """The controller loaded a profile: show it, unless that would drop unsaved changes."""
        if self.entry is not None and Path(loaded.path) == self.entry.path:
            return
        self._switching_to = loaded.name
        try:
            keep = not self.may_discard(f"open {loaded.name}")
        finally:
            self._switching_to = None
        if keep:
            self.title.setText(self.title.text() + f" (the panel shows {loaded.name})")
            return
        self.open_entry(entry_for_path(loaded.name, Path(loaded.path)))

    def apply_edit(self, edit: Callable[[ProfileDocument], object]) -> bool:
        """Run a form edit on the text; the edit is one undo step of the text editor."""
        doc = self.document()
        try:
            edit(doc)
        except (EditError, LibraryError) as exc:
            QMessageBox.warning(self, "Cannot change the profile", str(exc))
            return False
        self._replace_changed_lines(doc.text)
        return True

    def _replace_changed_lines(self, new_text: str) -> None:
        """Put `new_text` in by replacing only the lines that differ (one undo step); the cursor and
        the scroll position stay where the user had them."""
        old, new = self.text().splitlines(keepends=True), new_text.splitlines(keepends=True)
        if old == new:
            return
        head = 0
        while head < min(len(old), len(new)) and old[head] == new[head]:
            head += 1
        tail = 0
        while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
            tail += 1
        document = self.text_edit.document()
        cursor = QTextCursor(document)
        cursor.beginEditBlock()
        cursor.setPosition(document.findBlockByNumber(head).position())  # block n starts line n
        end = len(old) - tail
        if end < document.blockCount():
            cursor.setPosition(document.findBlockByNumber(end).position(), QTextCursor.MoveMode.KeepAnchor)
        else:
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText("".join(new[head:len(new) - tail]))
        cursor.endEditBlock()

    def _text_changed(self) -> None:
        self._update_state()
        self._debounce.start()

    def _update_state(self) -> None:
        e = self.entry
        own = e is not None and in_user_dir(e)
        for a, enabled in ((self.act_duplicate, e is not None), (self.act_rename, own), (self.act_delete, own),
                           (self.act_save, e is not None and (self.dirty or e.builtin))):
            a.setEnabled(enabled)
        if e is None:
            self.title.setText("No profile open: New… makes one.")
            return
        star = " ●" if self.dirty else ""
        where = (f"{e.group} profile, read-only: Save writes your changes to a copy in your profiles"
                 if e.builtin else str(e.path))
        self.title.setText(f"<b>{html.escape(e.name)}</b>{star} — {html.escape(where)}")

    # ------------------------------------------------------------------ validation

    def validate_now(self) -> None:
        """Check the current text off the GUI thread; the newest check is shown."""
        self._debounce.stop()
        self._check_seq += 1
        if self.entry is None:  # nothing open (after a delete)
            self.text_edit.show_problems([])
            self.problem_list.clear()
            self.preview.set_profile(None)
            self.preview_note.setText("")
            return
        seq, text, offset = self._check_seq, self.text(), self._controller.port_offset
        file = self.entry.path
        op = self._controller.reads.submit("check profile text", lambda: _check(text, file, offset))
        # the panel may be gone when a check ends (the queue outlives it at shutdown)
        op.then(lambda o: self._show_check(seq, *o.result()) if o.ok and shiboken6.isValid(self) else None)

    def _show_check(self, seq: int, check: ProfileCheck, prepared: ProfileDocument) -> None:
        if seq != self._check_seq:
            return  # the text changed since
        if prepared.text == self.text():
            self._document = prepared  # the form's next edit needs no parse on the GUI thread
        self.last_check = check
        self.text_edit.show_problems(check.problems)
        self.problem_list.show_problems(check.problems)
        if check.profile is not None:
            self.preview.set_profile(check.profile)
            self.preview_note.setText("Preview of the text as it is now (not saved yet)." if self.dirty else "")
        elif self.preview.profile is not None:
            self.preview_note.setText("The preview shows the last text the schema accepted.")
        self.form.refresh()
        self._show_paths_bar()

    # ------------------------------------------------------------------ library actions

    def _ask_name(self, title: str, label: str, default: str) -> str | None:
        name, ok = QInputDialog.getText(self, title, label, QLineEdit.EchoMode.Normal, default)
        return name.strip() if ok and name.strip() else None

    def _confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _store(self, make: Callable[[bool], ProfileEntry]) -> ProfileEntry | None:
        """Run a library operation; a name that is taken is replaced only if the user says so."""
        try:
            try:
                return make(False)
            except ProfileExists as exc:
                if not self._confirm("Replace the profile?", f"{exc}\n\nReplace it?"):
                    return None
                return make(True)
        except (LibraryError, OSError) as exc:
            QMessageBox.warning(self, "Cannot do that", str(exc))
            return None

    def _name_for(self, title: str, default: str) -> str | None:
        return self._ask_name(title, "Name of the profile (letters, digits, . _ -):", default)

    def new_profile(self) -> None:
        """A blank profile, or a copy of any built-in, workshop or user profile (the one shown first)."""
        if not self.may_discard("make a new profile"):
            return
        sources = sorted(list_profiles(), key=lambda e: e != self.entry)  # the one shown first
        choices = ["Blank", *(f"Copy of {e.name} ({e.group})" for e in sources)]
        choice, ok = QInputDialog.getItem(self, "New profile", "Start from:", choices, 1 if self.entry else 0, False)
        if not ok:
            return
        source = sources[choices.index(choice) - 1] if choice in choices[1:] else None
        name = self._name_for("New profile", copy_name(source.name) if source else "my-stack")
        if name is None:
            return
        try:
            text = source.path.read_text(encoding="utf-8") if source else blank_profile_text(name)
        except (OSError, UnicodeDecodeError) as exc:
            QMessageBox.warning(self, "Cannot read the profile", f"{source.path if source else ''}: {exc}")
            return
        origin = source.path.parent if source else None
        self._opened(self._store(lambda overwrite: create_profile(name, text, overwrite)), origin=origin)

    def duplicate_profile(self) -> None:
        """The text as it is now (unsaved changes included) into a new user profile."""
        if self.entry is None:
            return
        name = self._name_for("Duplicate profile", copy_name(self.entry.name))
        if name is None:
            return
        text, origin = self.text(), self.entry.path.parent
        self._opened(self._store(lambda overwrite: create_profile(name, text, overwrite)), origin=origin)

    def rename_profile(self) -> None:
        entry = self.entry
        if entry is None or not in_user_dir(entry):
            return
        if self.dirty and not self.save():
            return
        name = self._name_for("Rename profile", entry.name)
        if name is None or name == entry.name:
            return
        self._opened(self._store(lambda overwrite: rename_profile(entry, name, overwrite)))

    def delete_profile(self) -> None:
        entry = self.entry
        if entry is None or not in_user_dir(entry):
            return
        if not self._confirm("Delete the profile?", f"Delete {entry.name} ({entry.path})? This cannot be undone."):
            return
        try:
            delete_profile(entry)
        except (LibraryError, OSError) as exc:
            QMessageBox.warning(self, "Cannot delete", str(exc))
            return
        self.open_entry(None, "")
        self.libraryChanged.emit("")

    def save(self) -> bool:
        """Write the text; a built-in (read-only) is saved as a copy in the user's profiles."""
        entry = self.entry
        if entry is None:
            return False
        text = self.text()
        if entry.builtin:
            name = self._name_for(f"{entry.name} is read-only: save a copy", copy_name(entry.name))
            if name is None:
                return False
            return self._opened(self._store(lambda overwrite: create_profile(name, text, overwrite)), text,
                                origin=entry.path.parent)
        try:
            save_profile(entry, text)
        except (LibraryError, OSError) as exc:
            QMessageBox.warning(self, "Cannot save", str(exc))
            return False
        self._saved_text = text
        self._update_state()
        self.libraryChanged.emit(self._switching_to or entry.name)
        return True

    def _opened(self, entry: ProfileEntry | None, text: str | None = None, origin: Path | None = None) -> bool:
        if entry is None:
            return False
        self.open_entry(entry, text)
        if origin is not None and origin.resolve() != entry.path.parent.resolve():
            self._origin = origin
            self._show_paths_bar()
        self.libraryChanged.emit(self._switching_to or entry.name)
        return True

    def _show_paths_bar(self) -> None:
        relative: list[str] = []
        if self._origin is not None:
            try:
                relative = self.document().relative_paths()
            except EditError:
                pass
        self.paths_bar.setVisible(bool(relative))
        if relative:
            self.paths_note.setText(f"Copied from {self._origin}: relative paths ({', '.join(relative)}) now "
                                    f"start from {self.entry.path.parent if self.entry else '?'}.")

    def rebase_paths(self) -> None:
        """The relative paths of a copy, made absolute as they were meant where it came from."""
        origin = self._origin
        if origin is not None:
            self.apply_edit(lambda d: d.rebase_paths(origin))

    def may_discard(self, doing: str) -> bool:
        """True when there are no unsaved changes, or the user saved or discarded them."""
        if not self.dirty or self.entry is None:
            return True
        box = QMessageBox(QMessageBox.Icon.Question, "Unsaved changes",
                          f"{self.entry.name} has changes that are not saved. Save them before you {doing}?",
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                          | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = ask(box)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def may_close(self) -> bool:
        return self.may_discard("quit")


def ask(box: QMessageBox) -> QMessageBox.StandardButton:
    """Show a question (one place, so tests answer it)."""
    return QMessageBox.StandardButton(box.exec())

