"""Quality metrics, one place each, tested against a library oracle: word error rate (wer.py,
against jiwer), ROC AUC (auc.py, against scikit-learn) and COCO box mAP (coco_map.py: COCOeval's
algorithm on flat arrays, tested equal to pycocotools' COCOeval)."""
