"""What the user picked (dataset, user, item) follows them from page to page and into the address bar.

Streamlit forgets a page's widget values when another page runs, so every pick is also kept under its own
session key and as a query parameter (`?dataset=…&user=…&item=…`): the next page opens on the same dataset,
user and item, and a copied link opens on them too. A remembered value the page does not offer (a user of
another dataset) is ignored, and the page's own default is used.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

KEPT = "picked_"  # session keys of the remembered picks, apart from any widget's key


def preselect(widget_key: str, name: str, options: list[str], default: str | None = None) -> None:
    """Before the widget `widget_key` is drawn: unless it already holds one of `options`, set it to the pick
    `name` from the address bar, else from this session, else to `default`."""
    if st.session_state.get(widget_key) in options:
        return
    for value in (st.query_params.get(name), st.session_state.get(KEPT + name), default):
        if value in options:
            st.session_state[widget_key] = value
            return


def keep(name: str, value: str | None) -> None:
    """Remember the pick `name` for the other pages and show it in the address bar."""
    if value is None:
        return
    st.session_state[KEPT + name] = str(value)
    if st.query_params.get(name) != str(value):
        st.query_params[name] = str(value)


def user_labels(people: pd.DataFrame) -> dict[str, str]:
    """'User 5 · 33 F other · 175 interactions' for each user of `services.audience.users`: who they are and how
    much history the profile and the copy can draw on."""
    labels = {}
    for row in people.itertuples(index=False):
        who = " ".join(str(v) for v in (row.age, row.gender, row.occupation) if pd.notna(v))
        labels[str(row.user_id)] = f"User {row.user_id}" + (f" · {who}" if who else "") + \
            f" · {row.interactions} interactions"
    return labels


def item_labels(catalog: pd.DataFrame) -> dict[str, str]:
    """'Star Wars (1977) · Action|Adventure|Romance|Sci-Fi|War' for each item of `services.common.catalog`."""
    return {str(i): f"{title} · {category or ''}" for i, title, category in
            zip(catalog["item_id"], catalog["title"], catalog["category"], strict=True)}
