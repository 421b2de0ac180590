"""Human study: blind panels, offline form, answer validation, statistics, simulation, power.

Pipeline: :func:`build_study` (panels + form + secret key) -> raters answer the HTML form ->
:func:`load_responses` (validated, joined with the key) -> :func:`analyse` / :func:`write_report`.
:func:`simulate_answers` and :func:`power_curve` plan a study before anyone is asked.
CLI: ``python -m reggan_core.human_study {build,simulate,analyse,power}``.
"""
from .agreement import fleiss_kappa, krippendorff_alpha
from .build import StudyFiles, build_study
from .form import FormConfig, render_form, write_form
from .panels import Panel, StudyItem, check_key, collect_items, make_panels, panel_image, read_key, write_key
from .report import AnalysisConfig, analyse, markdown_table, write_report, write_tables
from .responses import ResponseError, Responses, check_responses, load_responses
from .measures import MEASURES, attach_measures, item_target, measure_key, measure_outputs
from .methods import (StudyInput, identical_outputs, make_method_outputs, method_descriptions, method_outputs,
                      study_inputs)
from .simulate import (ImageRaterModel, PowerConfig, RaterModel, expected_shares, improvement_shares, power_curve,
                       raters_needed, simulate_answers, simulate_image_answers, write_answers)
from .stats import (ChoiceData, binomial_two_sided, bootstrap_shares, chi_square_uniform, friedman,
                    head_to_head, holm, mean_ratings, one_sample_t, posthoc_wilcoxon, preference_shares,
                    relative_improvement_table, relative_improvements)
