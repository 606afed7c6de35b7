"""Our own instruction phrasings for the four tasks (written for this project).

Placeholders: {n} number of genes, {genes} a cell sentence, {cell_type} a label as written,
{a_cell_type} the label with its indefinite article ("an NK cell", "a B cell"), {drug} a drug name.
{n} is always filled with the real number of genes in the sentence, so "top 100" stays true for
any --top-k and for cells with fewer expressed genes.
"""

from __future__ import annotations

import re

RANDOM_GENERATION = [
    "List the {n} most highly expressed genes of a cell, from highest to lowest expression.",
    "Write a cell sentence: the top {n} genes of a single cell, ordered by decreasing expression.",
    "Generate the {n} genes with the strongest expression in one cell, most expressed first.",
    "Produce a plausible single-cell profile as {n} gene symbols ranked by expression.",
    "Give me {n} gene names for one cell, sorted from the highest to the lowest expression level.",
    "Name the top {n} expressed genes of any cell, in descending order.",
    "Create a realistic cell: write its {n} highest-expressed genes in order.",
    "Output {n} gene symbols describing one cell, the most abundant transcript first.",
    "Imagine a single cell and list its {n} leading genes by expression, strongest first.",
    "Sample one cell and report its top {n} genes, ranked from most to least expressed.",
    "Please generate a ranked list of {n} genes that a single cell could express most strongly.",
    "What could the {n} most expressed genes of a cell be? List them from highest to lowest.",
    "Compose the expression ranking of one cell: {n} gene symbols, descending.",
    "Describe a cell by its {n} most expressed genes, in order of decreasing expression.",
    "Write out the top-{n} gene ranking of a randomly chosen cell.",
    "Return {n} genes, ordered by expression, that together make up a believable cell.",
    "Generate a cell sentence of {n} genes, starting with the most highly expressed one.",
    "Invent a single-cell transcriptome summary: its {n} highest genes, in rank order.",
    "For one cell of your choice, rank its {n} most expressed genes from first to last.",
    "Show the {n} genes a typical cell expresses most, listed by decreasing level.",
    "Draw a cell at random and give its top {n} genes by expression.",
    "Provide a list of {n} gene symbols, highest expression first, for a single cell.",
]

PSEUDO_CELL_GENERATION = [
    "List the {n} most highly expressed genes of {a_cell_type}, from highest to lowest.",
    "Generate a cell sentence for {a_cell_type}: its top {n} genes in decreasing order of expression.",
    "Write the {n} genes that {a_cell_type} expresses most strongly, most expressed first.",
    "Produce a plausible profile of {a_cell_type} as {n} gene symbols ranked by expression.",
    "Give me {n} gene names for {a_cell_type}, sorted from the highest to the lowest expression.",
    "Name the top {n} expressed genes of a cell of type {cell_type}, in descending order.",
    "Create a realistic {cell_type} cell: write its {n} highest-expressed genes in order.",
    "Output {n} gene symbols describing {a_cell_type}, the most abundant transcript first.",
    "Imagine {a_cell_type} and list its {n} leading genes by expression, strongest first.",
    "Sample one cell of type {cell_type} and report its top {n} genes, most expressed first.",
    "Please generate the ranked list of {n} genes that {a_cell_type} would express most.",
    "What are the {n} most expressed genes of {a_cell_type}? List them from highest to lowest.",
    "Compose the expression ranking of {a_cell_type}: {n} gene symbols, descending.",
    "Describe {a_cell_type} by its {n} most expressed genes, in order of decreasing expression.",
    "Write out the top-{n} gene ranking of a cell annotated as {cell_type}.",
    "Return {n} genes, ordered by expression, that make up a believable {cell_type} cell.",
    "Cell type: {cell_type}. Generate its cell sentence of {n} genes, highest expression first.",
    "Simulate {a_cell_type} and give its {n} highest genes in rank order.",
    "Rank the {n} genes most characteristic of the expression of {a_cell_type}, first to last.",
    "Show the {n} genes that {a_cell_type} typically expresses most, by decreasing level.",
    "Draw one {cell_type} cell at random and give its top {n} genes by expression.",
    "Provide {n} gene symbols, highest expression first, for a single {cell_type} cell.",
]

ANNOTATION_OPENINGS = [
    "Here are the {n} most expressed genes of a cell, highest first: {genes}.",
    "A cell's top {n} genes, in decreasing order of expression, are: {genes}.",
    "The following {n} genes are ranked by expression in one cell: {genes}.",
    "Cell sentence ({n} genes, most expressed first): {genes}.",
    "This cell expresses these {n} genes most strongly, in order: {genes}.",
    "Consider a cell whose {n} leading genes are {genes}.",
    "Ranked expression profile of a single cell ({n} genes): {genes}.",
    "I measured a cell; its {n} highest genes from first to last are {genes}.",
    "Given a cell whose top {n} genes, ordered by expression, are {genes}:",
    "Top {n} transcripts of one cell, strongest first: {genes}.",
    "Below is a cell described by its {n} most abundant genes: {genes}.",
    "The expression ranking of a cell begins with these {n} genes: {genes}.",
    "In this cell, the {n} most highly expressed genes are {genes}.",
    "Genes ordered from most to least expressed in one cell ({n} in total): {genes}.",
    "A single-cell profile summarised by its top {n} genes: {genes}.",
    "Look at these {n} genes, ranked by how strongly one cell expresses them: {genes}.",
    "From a single-cell experiment, one cell's {n} top genes are: {genes}.",
    "These are a cell's {n} highest-expressed genes in descending order: {genes}.",
    "Sequence of the {n} most expressed genes of an unlabelled cell: {genes}.",
    "Take a cell with this top-{n} gene ranking: {genes}.",
    "One cell, {n} genes by decreasing expression: {genes}.",
    "The strongest {n} genes of a cell, listed in rank order, are {genes}.",
]

ANNOTATION_CLOSINGS = [
    "What type of cell is it?",
    "Which cell type does this cell belong to?",
    "Name its cell type.",
    "Identify the cell type.",
    "Annotate this cell with its cell type.",
    "What kind of cell is this most likely to be?",
    "Tell me the cell type.",
    "Classify the cell by type.",
    "Which cell type best fits this profile?",
    "Answer with the cell type only.",
    "What is the identity of this cell?",
    "Predict the cell type of this cell.",
]

DRUG_SENSITIVITY = [
    "A cancer cell treated with {drug} has these {n} top genes, highest first: {genes}. Is it sensitive or resistant to {drug}?",
    "Top {n} expressed genes of a tumour cell: {genes}. Will this cell respond to {drug}? Answer sensitive or resistant.",
    "Predict whether this cancer cell is sensitive or resistant to {drug}, given its {n} most expressed genes: {genes}.",
    "Cell sentence of a cancer cell ({n} genes): {genes}. Drug: {drug}. Sensitive or resistant?",
    "Given the ranked genes {genes} ({n} most expressed in one cancer cell), is the cell sensitive or resistant to {drug}?",
    "Here are the {n} highest-expressed genes of a cancer cell exposed to {drug}: {genes}. Classify its response as sensitive or resistant.",
    "Does this cancer cell resist {drug} or respond to it? Its top {n} genes are {genes}.",
    "Drug response prediction for {drug}. The cell's {n} leading genes, in decreasing order: {genes}. Answer sensitive or resistant.",
    "Based on these {n} genes ranked by expression, {genes}, how does the cell respond to {drug}: sensitive or resistant?",
    "A tumour cell expresses these {n} genes most strongly: {genes}. Is it sensitive to {drug}, or resistant?",
    "Classify the {drug} response (sensitive or resistant) of a cancer cell whose top {n} genes are {genes}.",
    "One cancer cell, {n} genes from most to least expressed: {genes}. Predict its sensitivity to {drug}.",
    "Will {drug} work on this cancer cell? Its expression ranking starts with these {n} genes: {genes}. Say sensitive or resistant.",
    "The {n} most abundant transcripts of a cancer cell are {genes}. Is the cell sensitive or resistant to treatment with {drug}?",
    "Judge from the top {n} genes of this cancer cell ({genes}) whether it is sensitive or resistant to {drug}.",
    "Expression profile (top {n} genes): {genes}. Question: is this cancer cell sensitive or resistant to {drug}?",
]

# Letters whose spoken name starts with a vowel sound: "an NK cell", "an HSC", "a CD4+ T cell".
_VOWEL_SOUND_LETTERS = set("AEFHILMNORSX")
_CONSONANT_SOUND_PREFIXES = ("uni", "use", "usu", "uro", "eu", "one", "ure")
_SILENT_H_PREFIXES = ("hour", "honest", "honour", "honor", "heir")


def indefinite_article(phrase: str) -> str:
    """'a' or 'an' for a label, reading acronyms letter by letter (an NK cell, a CD8+ T cell)."""
    word = re.split(r"[\s/_-]", phrase.strip(), maxsplit=1)[0]
    letters = re.sub(r"[^A-Za-z]", "", word)
    if not letters:
        return "a"
    looks_like_acronym = sum(c.isupper() for c in letters[:3]) >= 2 or (len(letters) <= 3 and letters.isupper())
    if looks_like_acronym:
        return "an" if letters[0].upper() in _VOWEL_SOUND_LETTERS else "a"
    lower = letters.lower()
    if lower.startswith(_SILENT_H_PREFIXES):
        return "an"
    if lower.startswith(_CONSONANT_SOUND_PREFIXES):
        return "a"
    return "an" if lower[0] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{indefinite_article(phrase)} {phrase}"


def n_phrasings(task: str) -> int:
    if task == "annotation":
        return len(ANNOTATION_OPENINGS) * len(ANNOTATION_CLOSINGS)
    return len(_SINGLE[task])


def render(task: str, choice: int, *, n: int, genes: str = "", cell_type: str = "", drug: str = "") -> str:
    """The instruction of phrasing number `choice` (taken modulo the number of phrasings)."""
    fields = {"n": n, "genes": genes, "cell_type": cell_type, "a_cell_type": with_article(cell_type), "drug": drug}
    if task == "annotation":
        choice %= n_phrasings(task)
        opening, closing = divmod(choice, len(ANNOTATION_CLOSINGS))
        return ANNOTATION_OPENINGS[opening].format(**fields) + " " + ANNOTATION_CLOSINGS[closing]
    if task not in _SINGLE:
        raise ValueError(f"unknown task {task!r}; expected one of {list(_SINGLE) + ['annotation']}")
    phrasings = _SINGLE[task]
    return phrasings[choice % len(phrasings)].format(**fields)


_SINGLE = {
    "random_generation": RANDOM_GENERATION,
    "pseudo_cell_generation": PSEUDO_CELL_GENERATION,
    "drug_sensitivity": DRUG_SENSITIVITY,
}
