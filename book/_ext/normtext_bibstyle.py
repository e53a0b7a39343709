"""The bibliography labelled as the book cites: "Ioffe and Szegedy, 2015".

The chapters cite with sphinxcontrib-bibtex's ``author_year`` style; pybtex's
own label styles would label the list ``[IS15]``. This extension registers a
pybtex formatting style, ``normtext_author_year``, whose labels are the same
author-year text as the citations (last names: one, two joined by "and", or the
first and "et al."), and whose list is sorted by author, year and title.
Two works whose labels would be the same carry a letter in their ``year``
field in ``references.bib`` (``2021a``, ``2021b``), so that their citations
and labels differ alike.
"""
from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = entry.fields.get("organization") or entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield author_year(entry)


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = SortingStyle


def setup(app):
    register_plugin("pybtex.style.formatting", "normtext_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
