"""The profile side of the panel: the list of profiles, the description of the loaded one, and the
request-path graph or, for a profile that cannot be used, its problems.

Each widget is given the :class:`~stackpanel.qt.controller.StackController` and connects itself.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QStackedWidget, QVBoxLayout, QWidget

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.library import list_profiles, user_dir
from stackpanel.qt.controller import LoadedProfile, StackController
from stackpanel.qt.graph_view import GraphView
from stackpanel.qt.theme import icon

PATH_ROLE = Qt.ItemDataRole.UserRole
NAME_ROLE = Qt.ItemDataRole.UserRole + 1


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ProfileList(QListWidget):
    """Built-in and user profiles; choosing one loads it (off the GUI thread, by the controller).
    Locked while the stack runs or an operation is under way."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("profiles")
        # no horizontal scroll bar (it would cut the last name): a long name or folder is elided
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setUniformItemSizes(True)
        self._controller = controller
        self.currentItemChanged.connect(lambda cur, _prev: self._select(cur))
        controller.stateChanged.connect(lambda: self.setEnabled(not controller.active and not controller.busy))

    def refresh(self, select: str | None = None) -> None:
        """Listing three directories is cheap (no file contents read); loading happens on the reader."""
        self.blockSignals(True)
        self.clear()
        entries = list_profiles()
        chosen: QListWidgetItem | None = None
        for group_name in ("workshop", "built-in", "user"):  # an instructor's profiles on top
            group = [e for e in entries if e.group == group_name]
            if not group:
                continue
            header = QListWidgetItem(f"yours ({_home_short(user_dir())})" if group_name == "user" else group_name)
            header.setToolTip(str(user_dir()) if group_name == "user" else "")
            header.setFlags(Qt.ItemFlag.NoItemFlags)
            f = header.font()
            f.setBold(True)
            header.setFont(f)
            self.addItem(header)
            for e in group:
                item = QListWidgetItem(f"  {e.name}")
                item.setData(PATH_ROLE, str(e.path))
                item.setData(NAME_ROLE, e.name)
                item.setToolTip(str(e.path))
                self.addItem(item)
                if e.name == select and (chosen is None or group_name != "built-in"):  # as resolve_profile
                    chosen = item
        self.blockSignals(False)
        self._fit_height()
        if chosen is None:
            chosen = next((self.item(i) for i in range(self.count()) if self.item(i).data(NAME_ROLE)), None)
        if chosen is not None:
            self.setCurrentItem(chosen)  # loads it

    def content_height(self) -> int:
        return sum(self.sizeHintForRow(i) for i in range(self.count())) + 2 * self.frameWidth()

    def _fit_height(self) -> None:
        """As tall as its names (the nodes below get the rest); it scrolls only when the window is
        too short for all of them."""
        self.setMaximumHeight(max(self.content_height(), 3 * max(1, self.sizeHintForRow(0))))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._fit_height()

    def current_name(self) -> str | None:
        item = self.currentItem()
        return item.data(NAME_ROLE) if item is not None else None

    def select_profile(self, name: str) -> None:
        for i in range(self.count()):
            item = self.item(i)
            if item.data(NAME_ROLE) == name:
                self.setCurrentItem(item)
                return
        raise KeyError(name)

    def _select(self, item: QListWidgetItem | None) -> None:
        if item is None or not item.data(PATH_ROLE):
            return
        self._controller.load_profile(item.data(NAME_ROLE), Path(item.data(PATH_ROLE)))


def _home_short(path: Path) -> str:
    """``path`` with the home directory as ``~``."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class ProfileDescription(QLabel):
    """Name and description of the loaded profile (or its path when it is invalid)."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        controller.profileLoading.connect(lambda _name: self.setText("loading …"))
        controller.profileLoaded.connect(self._on_loaded)

    def _on_loaded(self, loaded: LoadedProfile) -> None:
        p = loaded.profile
        if p is None:
            self.setText(f"{loaded.path}")
            return
        text = f"<b>{esc(p.name)}</b><br>{esc(p.description)}"
        if loaded.preview_error:
            text += f"<br><span style='color:#e5534b'>{esc(loaded.preview_error)}</span>"
        self.setText(text)


class ProblemsView(QWidget):
    """A profile that cannot be used: every problem with file:line:column and the fix."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        f = self.headline.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() + 1)
        self.headline.setFont(f)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.headline)
        lay.addWidget(self.list, 1)

    def show_error(self, error: ProfileError) -> None:
        n = len(error.problems)
        self.headline.setText(
            f"⚠ This profile has {n} problem{'s' if n != 1 else ''}; nothing will be started until "
            "they are fixed."
        )
        self.list.clear()
        for p in error.problems:
            where = f"{p.file}:{p.line}:{p.column}" if p.line else str(p.file)
            text = f"{where}\n{p.message}" + (f"\nfix: {p.hint}" if p.hint else "")
            item = QListWidgetItem(icon("stop"), text)
            item.setToolTip(text)
            self.list.addItem(item)

    def text(self) -> str:
        return "\n".join(self.list.item(i).text() for i in range(self.list.count()))


class ProfileOverview(QStackedWidget):
    """The request-path graph of a valid profile, or the problems of one that is not."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graph = GraphView(controller=controller)
        self.problems = ProblemsView()
        self.addWidget(self.graph)
        self.addWidget(self.problems)
        controller.profileLoaded.connect(self._on_loaded)

    def _on_loaded(self, loaded: LoadedProfile) -> None:
        if loaded.profile is None:
            self.problems.show_error(loaded.error or ProfileError([]))
            self.setCurrentWidget(self.problems)
        else:
            self.setCurrentWidget(self.graph)
