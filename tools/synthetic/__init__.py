"""The synthetic LibriSpeech-format corpus generator: text, speakers,
speech synthesis, augmentation data and the corpus layout."""
