"""Inference prompts: same sentences as training, and plain-language questions understood."""
import pytest

from chatcell_jax.singlecell import prepare as ins
from chatcell_jax.serve import prompts
from chatcell_jax.errors import InputError
from chatcell_jax.singlecell.records import load_split


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "data"
    manifest = ins.prepare_dataset(out, cells_input=ins.demo_data_path(), options=ins.PrepareOptions(mode="all"))
    return out, manifest


def test_inference_sentences_equal_training_sentences(prepared):
    out, manifest = prepared
    settings = prompts.SentenceSettings.from_manifest(manifest, chunk_size=97)
    built = {}
    for chunk in prompts.sentences_from_h5ad(ins.demo_data_path(), settings):
        built.update(zip(chunk.cell_ids, chunk.sentences))
    assert len(built) == 700
    for record in load_split(out, "test"):
        if record["task"] == "random_generation":
            assert built[record["cell_id"]] == record["target"]


def test_prompts_carry_n_and_fields():
    assert "3" in prompts.annotation_prompt("A B C") and "A B C" in prompts.annotation_prompt("A B C")
    assert "Cisplatin" in prompts.drug_prompt("A B C D", "Cisplatin")
    assert "CD56+ NK" in prompts.generation_prompt(50, "CD56+ NK") and "50" in prompts.generation_prompt(50)


def test_question_analysis(prepared):
    _, manifest = prepared
    genes = " ".join(list(manifest["genes"])[:20])
    assert prompts.analyse_question(f"What cell expresses {genes}?", manifest).task == "annotation"
    drug = prompts.analyse_question(f"Is a cell with {genes} sensitive to cisplatin?", manifest)
    assert drug.task == "drug_sensitivity"
    pseudo = prompts.analyse_question("Give me the top 100 genes of a cd14+ monocyte", manifest)
    assert pseudo.task == "pseudo_cell_generation" and pseudo.cell_type == "CD14+ Monocyte"
    assert prompts.analyse_question("top genes of a CD56+ NK cell", manifest).unknown_gene_like == []
    assert prompts.analyse_question("Generate any cell", manifest).task == "random_generation"
    odd = prompts.analyse_question(f"Which type: {genes} NOTGENE42?", manifest)
    assert odd.unknown_gene_like == ["NOTGENE42"] and len(odd.genes) == 20
    with pytest.raises(InputError, match="empty"):
        prompts.analyse_question("   ", manifest)


@pytest.mark.parametrize("text, n", [("top 50 genes", 50), ("the 20 most expressed", 20), ("a cell", 100),
                                     ("top-5000 genes", 1000)])
def test_top_k_in_question(text, n):
    assert prompts.top_k_in_question(text, 100) == n
