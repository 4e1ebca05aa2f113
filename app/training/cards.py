"""What each shipped model is for and where it fails: the model card fields its training writes into the
manifest (``card``), shown on the Models page and at GET /models/NAME."""
from __future__ import annotations

TEXT_DATA = ("IMDb 50k movie reviews (Maas et al. 2011): the official 25,000-review train split for fitting and "
             "model selection; the 25,000-review test split, never used for either, for the figures")
TEXT_LIMITS = ("English movie reviews of 2011 and earlier, and polarized ones (the data holds no neutral reviews): a "
               "mixed or neutral text still gets one of the two labels. Other domains (products, tweets), other "
               "languages, sarcasm and texts of a few words are answered less reliably. Word n-grams only: no "
               "word order beyond pairs, no world knowledge.")

CARDS = {
    "review_sentiment": {
        "intended_use": "The sentiment (positive or negative) of an English movie review: triage, analytics, "
                        "demos; the flagship text model, served at POST /review.",
        "data": TEXT_DATA, "limitations": TEXT_LIMITS + " Its probability is a logistic model's, not calibrated "
                                                         "on any other data.",
    },
    "logistic_regression": {
        "intended_use": "A baseline on review_sentiment's features, chosen by name at POST /predict to compare.",
        "data": TEXT_DATA, "limitations": TEXT_LIMITS,
    },
    "linear_svc": {
        "intended_use": "A baseline on review_sentiment's features, chosen by name at POST /predict to compare.",
        "data": TEXT_DATA, "limitations": TEXT_LIMITS + " It answers a decision score, not a probability.",
    },
    "decision_tree": {
        "intended_use": "A weak, interpretable baseline on review_sentiment's features (POST /predict), to show "
                        "what the linear models gain.",
        "data": TEXT_DATA, "limitations": TEXT_LIMITS + " About one review in four is misclassified.",
    },
    "malaria_cell": {
        "intended_use": "Research and teaching: one segmented red-blood-cell crop from a Giemsa-stained thin blood "
                        "smear, classified as Parasitized or Uninfected. Not for diagnosis.",
        "data": "NIH/NLM Malaria Datasets (Rajaraman et al. 2018, PeerJ 6:e4568): 14,040 cell crops of 180 patients "
                "photographed at Chittagong Medical College Hospital; figures from 5-fold cross-validation by "
                "patient, so every figure is on patients the measured network never saw.",
        "limitations": "Not clinically validated. One hospital, P. falciparum, one microscope and camera: other "
                       "stains, species, magnifications or scanners are untested. It takes a crop of one cell, not a "
                       "whole smear (finding the cells is the caller's work). The data's labels are known to be "
                       "noisy, and accuracy varies by patient (the hardest patients are listed). The cell-likeness "
                       "check flags images unlike the training cells, but not cells from another setup that look "
                       "alike.",
    },
}
