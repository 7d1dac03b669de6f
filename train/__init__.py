"""Training: dataset, patient-level split, augmentation, the compact CNN, float then QAT phases."""
